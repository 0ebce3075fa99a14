"""The built-in tasks of ``lstmkit run``, registered through the ``register_tasks`` hook.

=========================  ========  =========  =========================  =================================
task                       inputs    target     loss                       metrics
=========================  ========  =========  =========================  =================================
``sine``                   features  sequence   mse                        mse, mae, rmse
``adding``                 features  last       mse                        mse
``copy``                   tokens    sequence   cross_entropy              accuracy, sequence_accuracy
``char_lm``                tokens    sequence   cross_entropy              perplexity, bits_per_char, accuracy
``csv``                    features  last       mse                        mse, mae, rmse (file units)
``sequence_classification`` either   last       cross_entropy              accuracy
=========================  ========  =========  =========================  =================================
"""
from .adding import AddingOptions, AddingTask
from .base import CarvedSplitOptions, Split, SyntheticOptions, SyntheticTask, Task, TaskError, TaskOptions
from .char_lm import CharLMOptions, CharLMTask
from .copy import CopyOptions, CopyTask
from .csv import CSVOptions, CSVTask
from .sequence_classification import SequenceClassificationOptions, SequenceClassificationTask
from .sine import SineOptions, SineTask

BUILTIN_TASKS = (SineTask, AddingTask, CopyTask, CharLMTask, CSVTask, SequenceClassificationTask)


def builtin_task_specs():
    """The ``TaskSpec`` of every built-in task."""
    return [task.spec() for task in BUILTIN_TASKS]


__all__ = [
    "Split", "Task", "TaskError", "TaskOptions", "SyntheticTask", "SyntheticOptions", "CarvedSplitOptions",
    "BUILTIN_TASKS", "builtin_task_specs",
    "SineTask", "SineOptions", "AddingTask", "AddingOptions", "CopyTask", "CopyOptions",
    "CharLMTask", "CharLMOptions", "CSVTask", "CSVOptions",
    "SequenceClassificationTask", "SequenceClassificationOptions",
]
