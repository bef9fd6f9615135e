"""Method tasks for the shared trainer; importing this package registers them."""

from . import dve as dve
from . import mcs as mcs
from . import scops as scops
from . import ssn as ssn
from .base import Task, get_task, register_task

__all__ = ["Task", "get_task", "register_task"]
