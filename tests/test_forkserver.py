"""The script fork server (xetrack_c/run/forkserver.py), driven through its pipe protocol."""

import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "xetrack_c", "run", "forkserver.py")
INT = struct.Struct("<i")


class Server:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.proc = subprocess.Popen([sys.executable, SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)

    def start(self, script, *args, env=None, cwd=None):
        out, err = self.tmp_path / "out.txt", self.tmp_path / "err.txt"
        out.write_text("")
        err.write_text("")
        request = json.dumps({"argv": [str(script), *args], "env": env or {"PATH": os.environ["PATH"]},
                              "cwd": str(cwd or self.tmp_path), "stdout": str(out),
                              "stderr": str(err)}).encode()
        self.proc.stdin.write(INT.pack(len(request)) + request)
        self.proc.stdin.flush()
        return INT.unpack(self.proc.stdout.read(4))[0]

    def wait(self):
        status = INT.unpack(self.proc.stdout.read(4))[0]
        return (os.waitstatus_to_exitcode(status), (self.tmp_path / "out.txt").read_text(),
                (self.tmp_path / "err.txt").read_text())

    def run(self, script, *args, **kw):
        self.start(script, *args, **kw)
        return self.wait()

    def close(self):
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(body)
    return path


def test_runs_like_a_fresh_interpreter(server, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    body = ("import os, sys\n"
            "print(sys.argv, os.environ.get('FOO'), os.getcwd(), sys.path[0], __name__)\n"
            "print('to stderr', file=sys.stderr)\n")
    path = script(tmp_path, "s.py", body)
    code, out, err = server.run(path, "a", "b c", env={"FOO": "bar"}, cwd=work)
    assert code == 0
    assert out.strip() == f"[{str(path)!r}, 'a', 'b c'] bar {work} {tmp_path} __main__"
    assert err.strip() == "to stderr"


def test_exit_codes_and_tracebacks(server, tmp_path):
    path = script(tmp_path, "s.py", "import sys\nmode = sys.argv[1]\n"
                  "if mode == 'raise':\n    raise ValueError('boom')\n"
                  "if mode == 'exit3':\n    sys.exit(3)\n"
                  "if mode == 'exitmsg':\n    sys.exit('bad config')\n"
                  "if mode == 'abort':\n    import os; os.abort()\n")
    code, _, err = server.run(path, "raise")
    assert code == 1
    assert err.splitlines()[0] == "Traceback (most recent call last):"
    assert "ValueError: boom" in err and "runpy" not in err and "forkserver" not in err
    assert server.run(path, "exit3")[0] == 3
    code, _, err = server.run(path, "exitmsg")
    assert (code, err.strip()) == (1, "bad config")
    assert server.run(path, "abort")[0] == -signal.SIGABRT
    assert server.run(path, "ok")[0] == 0  # the server goes on after every kind of ending


def test_exit_flushes_files_runs_atexit_and_joins_threads(server, tmp_path):
    target = tmp_path / "left-open.txt"
    path = script(tmp_path, "s.py", (
        "import atexit, sys, threading, time\n"
        "f = open(sys.argv[1], 'w'); f.write('written, never closed')\n"
        "atexit.register(lambda: print('atexit'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread'))).start()\n"
        "print('main')\n"))
    code, out, _ = server.run(path, str(target))
    assert code == 0
    assert out.split() == ["main", "thread", "atexit"]
    assert target.read_text() == "written, never closed"


def test_child_has_its_own_process_group_and_can_be_killed(server, tmp_path):
    path = script(tmp_path, "s.py", "import time\ntime.sleep(60)\n")
    pid = server.start(path)
    assert pid > 0
    deadline = time.monotonic() + 10
    while os.getpgid(pid) != pid and time.monotonic() < deadline:
        time.sleep(0.01)  # setpgid runs in the child just after the fork
    assert os.getpgid(pid) == pid
    os.killpg(pid, signal.SIGKILL)
    assert server.wait()[0] == -signal.SIGKILL


def test_server_ignores_sigint_and_exits_when_its_input_closes(server, tmp_path):
    path = script(tmp_path, "s.py", "print('ok')\n")
    assert server.run(path)[0] == 0
    server.proc.send_signal(signal.SIGINT)
    assert server.run(path)[:2] == (0, "ok\n")
    assert server.close() == 0


def test_ended_child_is_reaped_only_at_the_next_request(server, tmp_path):
    path = script(tmp_path, "s.py", "import sys\nsys.exit(int(sys.argv[1]))\n")
    pid = server.start(path, "7")
    assert server.wait()[0] == 7
    with open(f"/proc/{pid}/stat") as stat:  # still a zombie: its pid cannot be reused yet
        assert stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    assert server.run(path, "0")[0] == 0
    assert not os.path.exists(f"/proc/{pid}")


def test_main_module_looks_like_a_scripts(server, tmp_path):
    path = script(tmp_path, "s.py", (
        "import sys\n"
        "main = sys.modules['__main__']\n"
        "print(main is sys.modules[__name__], __file__, __cached__, type(__loader__).__name__)\n"
        "def f(): pass\n"
        "print(f.__module__, f.__qualname__)\n"))
    code, out, _ = server.run(path)
    assert code == 0
    assert out.split("\n")[:2] == [f"True {path} None SourceFileLoader", "__main__ f"]


def test_a_directory_with_a_main_module_runs(server, tmp_path):
    package = tmp_path / "app"
    package.mkdir()
    (package / "__main__.py").write_text("import sys\nprint('app', sys.argv[1:])\n")
    code, out, _ = server.run(package, "x")
    assert (code, out) == (0, "app ['x']\n")


def test_batch_runs_scripts_from_a_virtual_environment(tmp_path):
    """In a venv, ``site`` imports less than in a base interpreter, so the server's own imports
    are the first to need ``types``: they must get the standard library's, not run/types.py."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    script = tmp_path / "script.py"
    script.write_text("import sys, types\nprint('ran', types.__file__.endswith('types.py'))\n")
    batch = ("import sys, xetrack_c\n"
             "spec = xetrack_c.ExperimentSpec(script_path=sys.argv[1], config={'i': 1})\n"
             "[result] = xetrack_c.run_multiple([spec], None, launcher='forkserver')\n"
             "print(result.status)\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([str(venv / "bin" / "python"), "-c", batch, str(script)], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "completed", out.stdout + out.stderr
