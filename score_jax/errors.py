"""Exceptions the command line maps to exit statuses (no heavy imports, so `--help` stays fast)."""

# sysexits' EX_TEMPFAIL: the run was preempted after saving its state; rerunning resumes it.
EXIT_PREEMPTED = 75


class TrainingPreempted(RuntimeError):
    """SIGTERM (or a stop on another process) ended a run after its state was saved."""
