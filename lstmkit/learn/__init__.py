"""Tools for learners: shapes, gate traces, gradient checks, sampling, self-grading exercises,
and the pictures of the docs (:mod:`lstmkit.learn.figures`)."""
