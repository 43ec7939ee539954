"""Exceptions the command line maps to exit statuses (no heavy imports, so `--help` stays fast)."""

# sysexits' EX_TEMPFAIL: the run was preempted after saving its state; rerunning resumes it.
EXIT_PREEMPTED = 75


def first_line(err: BaseException, limit: int = 200) -> str:
    """'ErrorType: the first line of its message' (long library errors span pages)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:limit] if lines else ''}"


class TrainingPreempted(RuntimeError):
    """SIGTERM (or a stop on another process) ended a run after its state was saved."""
