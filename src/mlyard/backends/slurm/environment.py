"""``env = "auto"``: a Python environment on the cluster that mlyard creates once and reuses.

The venv lives in ``<remote_workdir>/envs/<key>``, keyed by a hash of what defines it (the
interpreter the setup lines provide, the requirements). It is layered over that interpreter's
own packages (a ``.pth`` file), so a site's ``module load pytorch`` stays usable and only what
is missing is installed. Creation runs once, under a lock on the shared file system, so two
orchestrators never build the same environment at the same time; later runs find it ready.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import time

from mlyard.backends.slurm.profile import SlurmProfile
from mlyard.backends.slurm.ssh import ClusterShell
from mlyard.errors import BackendError

logger = logging.getLogger(__name__)

READY_MARKER = ".mlyard-ready"
_OUTPUT_TAIL_LINES = 30


def environment_key(profile: SlurmProfile) -> str:
    """What the environment is made of, hashed: a change to any of it builds a new one."""
    recipe = json.dumps(
        {"python": profile.python, "setup": profile.setup, "requirements": profile.requirements},
        sort_keys=True,
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def bootstrap_command(profile: SlurmProfile, workdir: str) -> tuple[str, str]:
    """The remote command that creates the environment when missing, and the venv's path."""
    key = environment_key(profile)
    venv = f"{workdir}/envs/{key}"
    setup = "".join(f"{line} && " for line in profile.setup)
    requirements = " ".join(shlex.quote(r) for r in profile.requirements)
    install = (
        f"{shlex.quote(venv)}/bin/python -m pip install --disable-pip-version-check -q "
        f"{requirements} && "
        if requirements
        else ""
    )
    python = shlex.quote(profile.python)
    quoted_venv = shlex.quote(venv)
    # Layer over the base interpreter's packages (addsitedir also runs its .pth files, e.g.
    # editable installs): what it has is not installed again.
    base_site = (
        "import sysconfig; "
        'print("import site; site.addsitedir(%r)" % sysconfig.get_paths()["purelib"])'
    )
    venv_site = 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
    build = (
        f"{setup}rm -rf {quoted_venv} && {python} -m venv {quoted_venv} && "
        f"{python} -c {shlex.quote(base_site)} > "
        f'"$({quoted_venv}/bin/python -c {shlex.quote(venv_site)})/_mlyard_base.pth" && '
        f"{install}touch {shlex.quote(venv + '/' + READY_MARKER)} && echo created"
    )
    command = (
        f"mkdir -p {shlex.quote(workdir + '/envs')} && "
        f"exec 9>{shlex.quote(venv + '.lock')} && flock 9 && "
        f"if [ -f {shlex.quote(venv + '/' + READY_MARKER)} ]; then echo ready; "
        f"else ( {build} ) 2>&1; fi"
    )
    return command, venv


def ensure_environment(shell: ClusterShell, profile: SlurmProfile, workdir: str) -> str:
    """Create the environment when missing (blocks, once per recipe); returns the venv path."""
    command, venv = bootstrap_command(profile, workdir)
    started = time.monotonic()
    logger.info("Checking the Python environment on the cluster (%s)...", venv)
    done = shell.run(command)
    if not done.ok or not done.stdout.strip().endswith(("ready", "created")):
        tail = "\n".join(done.output.splitlines()[-_OUTPUT_TAIL_LINES:])
        raise BackendError(
            f"Creating the Python environment {venv} on the cluster failed:\n{tail}",
            hint="Check `python`, `setup` and `requirements` in the SLURM profile; the setup "
            "lines must provide a Python 3.11+ with the venv module.",
        )
    if done.stdout.strip().endswith("created"):
        logger.info(
            "Created the environment %s in %.0f s; later runs reuse it.",
            venv,
            time.monotonic() - started,
        )
    return venv
