"""Django's task framework for the tests: django.tasks (Django >= 6.0), else the
django-tasks backport. Raises ImportError when neither is installed."""

try:
    from django.tasks import task, task_backends
    from django.tasks.exceptions import TaskResultMismatch
except ImportError:
    from django_tasks import task, task_backends  # type: ignore
    from django_tasks.exceptions import TaskResultMismatch  # type: ignore

__all__ = ["TaskResultMismatch", "task", "task_backends"]
