"""Tools for learners: shapes, gate traces, gradient checks, sampling, self-grading exercises."""
