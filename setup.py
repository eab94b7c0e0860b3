"""Build the C core ``xetrack_c._core`` against the system SQLite and NumPy's headers.

Environment switches:
    XETRACK_DEBUG=1     -O0 -g, asserts on
    XETRACK_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer
    XETRACK_COVERAGE=1  gcov instrumentation
    XETRACK_WERROR=1    warnings are errors (CI)
"""

import glob
import os
import shutil
import tempfile

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

INSTALL_HELP = """To build xetrack_c from source, install a C compiler and SQLite's headers, then retry:
    Debian, Ubuntu:        apt-get install gcc libsqlite3-dev
    Fedora, RHEL, CentOS:  dnf install gcc sqlite-devel
    Alpine:                apk add gcc musl-dev sqlite-dev
    macOS:                 xcode-select --install    (the SDK has SQLite's headers)
Or install a binary wheel, which needs neither (docs/install.md)."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


compile_args = ["-std=c11", "-fvisibility=hidden", "-Wall", "-Wextra",
                "-Wno-missing-field-initializers", "-Wno-cast-function-type"]
link_args = []
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("_GNU_SOURCE", "1")]

if _flag("XETRACK_DEBUG") or _flag("XETRACK_SANITIZE"):
    compile_args += ["-O0", "-g3", "-UNDEBUG"]
    macros.append(("XETRACK_DEBUG", "1"))
else:
    compile_args += ["-O2"]
if _flag("XETRACK_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    compile_args += san
    link_args += san
if _flag("XETRACK_COVERAGE"):
    compile_args += ["--coverage", "-O0"]
    link_args += ["--coverage"]
if _flag("XETRACK_WERROR"):
    compile_args += ["-Werror"]

def _try_compile(compiler, source: str) -> bool:
    """Whether ``compiler`` compiles and links ``source`` (a C program) with SQLite."""
    from setuptools.errors import CCompilerError, ExecError

    with tempfile.TemporaryDirectory(prefix="xetrack_c-check-") as tmp:
        path = os.path.join(tmp, "check.c")
        with open(path, "w") as handle:
            handle.write(source)
        saved = [os.dup(1), os.dup(2)]  # the compiler's own complaint is not the message
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            objects = compiler.compile([path], output_dir=tmp)
            compiler.link_executable(objects, "check", output_dir=tmp, libraries=["sqlite3"])
        except (CCompilerError, ExecError):
            return False
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (*saved, devnull):
                os.close(fd)
    return True


class BuildExt(build_ext):
    """build_ext that first checks for a C compiler and SQLite's headers and library, and
    stops with one message naming what is missing instead of a compiler's error."""

    def build_extensions(self) -> None:
        compiler = self.compiler
        program = getattr(compiler, "compiler_so", None) or getattr(compiler, "cc", None)
        name = program[0] if isinstance(program, list) and program else "cc"
        if shutil.which(name) is None:
            raise SystemExit(f"error: xetrack_c needs a C compiler, and {name!r} is not on PATH.\n"
                             + INSTALL_HELP)
        if not _try_compile(compiler, "int main(void) { return 0; }\n"):
            raise SystemExit(f"error: the C compiler {name!r} cannot build a program.\n"
                             + INSTALL_HELP)
        if not _try_compile(compiler, "#include <sqlite3.h>\n"
                            "int main(void) { return sqlite3_libversion_number() > 0 ? 0 : 1; }\n"):
            raise SystemExit("error: SQLite's headers (sqlite3.h) or its library (libsqlite3) were "
                             "not found.\n" + INSTALL_HELP)
        super().build_extensions()


core = Extension(
    "xetrack_c._core",
    sources=sorted(glob.glob("csrc/*.c")),
    depends=sorted(glob.glob("csrc/*.h")),
    include_dirs=["csrc", numpy.get_include()],
    libraries=["sqlite3", "pthread", "dl"],
    define_macros=macros,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=[core], cmdclass={"build_ext": BuildExt})
