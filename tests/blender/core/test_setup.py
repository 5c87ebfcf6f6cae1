"""Setting up the backend from Blender (core/setup.py: plain Python, no Blender).

The real setup downloads PyTorch and needs the internet; here everything runs
offline: the CUDA detection against fake ``nvidia-smi`` programs, the exact
command lines, and a real run creating a virtual environment and installing a
wheel built here with ``--no-index`` (then checking that the new Python runs
the backend). The weights check runs the real ``backend doctor``.
"""

import base64
import hashlib
import os
import subprocess
import sys
import time
import zipfile

import pytest

import blender_testing
from scail2.core import setup as backend_setup

REPO = blender_testing.REPO_ROOT
BACKEND_PYTHON = os.path.join(REPO, ".venvs", "backend", "bin", "python")
posix_only = pytest.mark.skipif(os.name == "nt", reason="fake programs are POSIX shell scripts")

NVIDIA_SMI_OUTPUT = """\
Tue Nov 24 10:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.10              Driver Version: 570.86.10      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|   0  NVIDIA GeForce RTX 4090        Off |   00000000:01:00.0  On |                  Off |
+-----------------------------------------+------------------------+----------------------+
"""


def test_module_has_no_blender_imports():
    with open(os.path.join(REPO, "core", "setup.py"), encoding="utf-8") as fh:
        source = fh.read()
    assert "import bpy" not in source


@pytest.mark.parametrize("cuda, version", [("12.8", (12, 8)), ("13.0", (13, 0)), ("12.4", (12, 4))])
def test_parse_cuda_version(cuda, version):
    assert backend_setup.parse_cuda_version(NVIDIA_SMI_OUTPUT.format(cuda=cuda)) == version


def test_parse_cuda_version_without_one():
    assert backend_setup.parse_cuda_version("NVIDIA-SMI has failed because it couldn't communicate") is None
    assert backend_setup.parse_cuda_version("") is None


@pytest.mark.parametrize("cuda, tag", [
    ((13, 0), "cu128"), ((12, 9), "cu128"), ((12, 8), "cu128"),
    ((12, 7), "cu126"), ((12, 6), "cu126"),
    ((12, 5), "cu124"), ((12, 4), "cu124"),
    ((12, 2), "cpu"), ((11, 8), "cpu"), (None, "cpu"),
])
def test_torch_index_for_the_cuda_version(cuda, tag):
    assert backend_setup.torch_index_tag(cuda) == tag
    assert backend_setup.torch_index_url(tag) == "https://download.pytorch.org/whl/" + tag


@posix_only
def test_detect_cuda_runs_nvidia_smi(tmp_path):
    smi = blender_testing.write_executable(
        str(tmp_path / "nvidia-smi"), "#!/bin/sh\ncat <<'EOF'\n" + NVIDIA_SMI_OUTPUT.format(cuda="12.6") + "EOF\n")
    version, line = backend_setup.detect_cuda(smi)
    assert version == (12, 6)
    assert line == "NVIDIA driver for CUDA 12.6: PyTorch cu126"


@posix_only
def test_detect_cuda_without_a_gpu(tmp_path):
    version, line = backend_setup.detect_cuda(str(tmp_path / "missing-nvidia-smi"))
    assert version is None and "nvidia-smi is missing" in line
    failing = blender_testing.write_executable(
        str(tmp_path / "nvidia-smi"), "#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    version, line = backend_setup.detect_cuda(failing)
    assert version is None and line == "nvidia-smi found no usable GPU: PyTorch for the CPU"


def test_pinned_requirement_of_the_shipped_list(tmp_path):
    shipped = os.path.join(REPO, "requirements", "backend.txt")
    assert backend_setup.pinned_requirement(shipped, "torch") == "torch==2.13.0"
    listed = tmp_path / "reqs.txt"
    listed.write_text("# torch==0.1 in a comment\ntorchvision==0.2\nTorch >= 2.0  # lower bound\n")
    assert backend_setup.pinned_requirement(str(listed), "torch") == "Torch >= 2.0"
    assert backend_setup.pinned_requirement(str(tmp_path / "none.txt"), "torch") is None


def test_setup_command_lines():
    reqs = os.path.join(REPO, "requirements", "backend.txt")
    venv = os.path.join("/data", "backend-venv")
    py = os.path.join(venv, "bin", "python") if os.name != "nt" else os.path.join(venv, "Scripts", "python.exe")
    steps = backend_setup.setup_steps("/blender/python/bin/python3.11", venv, reqs, "cu128", addon_dir="/ext/scail2")
    assert [(s.label, list(s.argv), s.cwd) for s in steps] == [
        ("Creating the environment", ["/blender/python/bin/python3.11", "-m", "venv", venv], None),
        ("Installing PyTorch (cu128)",
         [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "torch==2.13.0",
          "--index-url", "https://download.pytorch.org/whl/cu128"], None),
        ("Installing the backend's packages",
         [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-r", reqs], None),
        ("Checking the backend", [py, "-m", "backend", "--version"], "/ext/scail2"),
    ]
    cpu = backend_setup.setup_steps("/b/python", venv, reqs, "cpu", extra_pip_args=["--no-index"])
    assert cpu[1].argv[-4:] == ("torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu", "--no-index")
    assert cpu[-1].label == "Installing the backend's packages" and cpu[-1].argv[-1] == "--no-index"


def test_doctor_command_line():
    assert backend_setup.doctor_command("/venv/bin/python", "/models/scail2") == (
        "/venv/bin/python", "-m", "backend", "doctor", "--weights", "/models/scail2")


# -- real runs ------------------------------------------------------------------------------------

def build_wheel(folder, name="scail2_offline_probe", version="1.0"):
    """A minimal pure-Python wheel, so pip can install something with --no-index."""
    dist = "{:s}-{:s}.dist-info".format(name, version)
    files = {
        name + ".py": "VALUE = 42\n",
        dist + "/METADATA": "Metadata-Version: 2.1\nName: {:s}\nVersion: {:s}\n".format(
            name.replace("_", "-"), version),
        dist + "/WHEEL": "Wheel-Version: 1.0\nGenerator: scail2-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append("{:s},sha256={:s},{:d}".format(path, digest, len(text.encode())))
    record.append(dist + "/RECORD,,")
    files[dist + "/RECORD"] = "\n".join(record) + "\n"
    wheel = os.path.join(folder, "{:s}-{:s}-py3-none-any.whl".format(name, version))
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def follow(run, timeout=240.0):
    """Poll a run as the preferences' timer does; the (step, status) pairs seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        state = (run.step_index, run.status)
        if not seen or seen[-1] != state:
            seen.append(state)
        if run.finished:
            return seen
        assert time.monotonic() < deadline, run.lines(20)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def offline_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("setup")
    wheels = tmp / "wheels"
    wheels.mkdir()
    build_wheel(str(wheels))
    reqs = tmp / "requirements.txt"
    reqs.write_text("# offline stand-in for requirements/backend.txt\nscail2-offline-probe==1.0\n")
    venv = str(tmp / "user" / backend_setup.VENV_DIRNAME)
    steps = backend_setup.setup_steps(sys.executable, venv, str(reqs), "cpu", addon_dir=REPO,
                                      extra_pip_args=("--no-index", "--find-links", str(wheels)))
    run = backend_setup.CommandRun.start(steps, log_path=str(tmp / "user" / "setup.log"))
    at_return = run.status
    seen = follow(run)
    return {"run": run, "seen": seen, "at_return": at_return, "venv": venv, "tmp": tmp, "reqs": reqs,
            "wheels": wheels}


def test_setup_creates_the_environment_and_installs_offline(offline_setup):
    run, venv = offline_setup["run"], offline_setup["venv"]
    assert offline_setup["at_return"] == "running"  # never blocks the caller: the steps run after it returns
    assert run.status == "done", run.lines(30)
    assert run.message == "Done"
    assert [label for label in (s.label for s in run.steps)] == [
        "Creating the environment", "Installing the backend's packages", "Checking the backend"]
    assert [index for index, _status in offline_setup["seen"]] == sorted(index for index, _ in offline_setup["seen"])
    python = backend_setup.venv_python(venv)
    assert os.path.isfile(python)
    out = subprocess.run([python, "-c", "import scail2_offline_probe as p, sys; print(p.VALUE, sys.prefix)"],
                         capture_output=True, text=True, timeout=60)
    value, prefix = out.stdout.split()
    assert value == "42" and os.path.realpath(prefix) == os.path.realpath(venv)


def test_setup_log_shows_every_command_and_the_backend_answer(offline_setup):
    run = offline_setup["run"]
    lines = run.lines()
    commands = [line[2:] for line in lines if line.startswith("$ ")]
    assert commands == [" ".join(step.argv) for step in run.steps]
    assert any("Successfully installed scail2-offline-probe-1.0" in line for line in lines)
    assert lines[-1].startswith("scail2-backend ")  # python -m backend --version, in the new environment
    with open(offline_setup["tmp"] / "user" / "setup.log", encoding="utf-8") as fh:
        assert fh.read().splitlines() == lines


def test_setup_failure_is_one_line(offline_setup):
    reqs = offline_setup["tmp"] / "missing.txt"
    reqs.write_text("scail2-not-available-offline==9.9\n")
    python = backend_setup.venv_python(offline_setup["venv"])
    step = backend_setup.Step("Installing the backend's packages", (
        python, "-m", "pip", "install", "-r", str(reqs), "--no-index", "--find-links", str(offline_setup["wheels"])))
    run = backend_setup.CommandRun.start([step])
    follow(run)
    assert run.status == "failed"
    assert run.message.startswith("Installing the backend's packages failed: ")
    assert "scail2-not-available-offline" in run.message and "\n" not in run.message


def test_a_python_without_ensurepip_gets_what_to_install(tmp_path):
    # What Debian's and Ubuntu's Python prints for `-m venv` without python3-venv (their own Blender
    # package runs on it); the last line alone only names a failed command.
    distro_python = (sys.executable, "-c", "import sys; print('The virtual environment was not created "
                     "successfully because ensurepip is not\\navailable.  On Debian/Ubuntu systems, you need to "
                     "install the python3-venv\\npackage.'); print(\"Error: Command '['/x/bin/python3', '-m', "
                     "'ensurepip']' returned non-zero exit status 1.\"); sys.exit(1)")
    run = backend_setup.CommandRun.start([backend_setup.Step("Creating the environment", distro_python)])
    follow(run)
    assert run.status == "failed"
    assert run.message.startswith("Creating the environment failed: this Python cannot create environments")
    assert "sudo apt install python3-venv" in run.message and "\n" not in run.message


def test_cancel_and_timeout():
    sleeper = (sys.executable, "-c", "import time; print('waiting', flush=True); time.sleep(60)")
    run = backend_setup.CommandRun.start([backend_setup.Step("Waiting", sleeper),
                                          backend_setup.Step("Never", (sys.executable, "-c", "pass"))])
    deadline = time.monotonic() + 30
    while "waiting" not in run.lines():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    run.cancel()
    follow(run, timeout=10)
    assert run.status == "cancelled" and run.step_index == 0
    timed = backend_setup.CommandRun.start([backend_setup.Step("Waiting", sleeper, timeout_s=0.5)])
    follow(timed, timeout=10)
    assert timed.status == "failed" and timed.message == "Waiting failed: no answer within 0.5 s"


def test_missing_program_fails_cleanly(tmp_path):
    run = backend_setup.CommandRun.start([backend_setup.Step("Running", (str(tmp_path / "nothing"), "-V"))])
    follow(run, timeout=10)
    assert run.status == "failed" and "cannot run" in run.message


@pytest.mark.skipif(not os.path.exists(BACKEND_PYTHON), reason="no backend environment")
def test_weights_check_runs_the_doctor(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    step = backend_setup.Step("Checking the weights", backend_setup.doctor_command(BACKEND_PYTHON, str(weights)),
                              cwd=REPO, timeout_s=backend_setup.DOCTOR_TIMEOUT_S)
    run = backend_setup.CommandRun.start([step])
    follow(run, timeout=backend_setup.DOCTOR_TIMEOUT_S)
    assert run.status == "done", run.lines(20)
    findings = backend_setup.doctor_findings(run.lines())
    assert "weights  {:s}".format(str(weights)) in findings
    assert any(line.startswith("transformer: MISSING: ") for line in findings)
    assert any(line.startswith("encoders:    MISSING: ") for line in findings)
    todo = findings.index("To do:")
    assert any("download the SCAIL-2 transformer" in line for line in findings[todo:])


def test_the_environment_is_made_by_the_backend_python_when_one_is_set(tmp_path):
    venv = tmp_path / "backend-venv"
    chosen = str(tmp_path / "python3.12")
    blender = "/opt/blender/python/bin/python3.11"
    assert backend_setup.base_python("", str(venv), blender) == blender
    assert backend_setup.base_python(chosen, str(venv), blender) == chosen
    steps = backend_setup.setup_steps(backend_setup.base_python(chosen, str(venv), blender), str(venv),
                                      str(tmp_path / "requirements.txt"), "cpu")
    assert steps[0].argv == (chosen, "-m", "venv", str(venv))


def test_setting_up_again_makes_the_environment_from_the_python_it_came_from(tmp_path):
    # The Backend Python is the environment's own after a first Set Up: it is made again from its base.
    venv = tmp_path / "backend-venv"
    (venv / "bin").mkdir(parents=True)
    base = tmp_path / "python3.12"
    base.write_text("")
    own = str(venv / "bin" / "python")
    blender = "/opt/blender/python/bin/python3.11"
    assert backend_setup.base_python(own, str(venv), blender) == blender  # no pyvenv.cfg: Blender's
    (venv / "pyvenv.cfg").write_text("home = {0}\nexecutable = {1}\nversion = 3.12.3\n".format(tmp_path, base))
    assert backend_setup.base_python(own, str(venv), blender) == str(base)


def test_a_failure_explanation_is_never_cut():
    # The explanation is the message's end: what to do. A long raw last line is cut instead, by itself.
    long_line = "x" * 1000
    run = backend_setup.CommandRun.start([backend_setup.Step("Installing", (sys.executable, "-c",
                                          "import sys; print({!r}); sys.exit(3)".format(long_line)))])
    follow(run)
    assert run.message == "Installing failed: " + "x" * backend_setup.DETAIL_CHARS
    explanation = backend_setup.explain_failure(["ensurepip is not available"])
    run = backend_setup.CommandRun.start([backend_setup.Step("Creating the environment", (
        sys.executable, "-c", "import sys; print('x' * 400); print('ensurepip is not available'); sys.exit(1)"))])
    follow(run)
    assert run.message == "Creating the environment failed: " + explanation
