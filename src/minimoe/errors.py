"""One exception type for problems the user can fix; the CLI prints it as a single line."""


class MiniMoEError(ValueError):
    """A clear, user-facing error: bad input file, config/checkpoint mismatch, NaN loss, ..."""


class RecipeChanged(MiniMoEError):
    """A checkpoint was written under another recipe; `diff` names the changed fields (old -> new)."""

    def __init__(self, message: str, diff: str):
        super().__init__(message)
        self.diff = diff


# How to go on after a stop: a trainer job resumes from its checkpoint; a grid (study, demo) is rerun as is.
RESUME_HINT = "rerun with --train.resume to continue"
RERUN_HINT = "rerun the same command to continue (finished stages are kept)"


class Stopped(BaseException):
    """A run stopped on a signal (SIGTERM), resumable from its last checkpoint; the CLI exits with `exit_code`.

    143 (128 + SIGTERM) is what a process killed by SIGTERM reports, so schedulers and shell chains
    still see an unfinished job, while the message says how to resume it. A BaseException, as KeyboardInterrupt:
    it can surface inside any code (outside the training loop the signal handler raises it at once), and no
    handler of errors (an unreadable checkpoint, a failed write) may mistake it for one.
    """

    exit_code = 143

    def __init__(self, detail: str, hint: str = RESUME_HINT):
        super().__init__(f"{detail}; {hint}")
        self.detail = detail
