"""Build the C core ``xetrack_c._core`` against the system SQLite and NumPy's headers.

Environment switches:
    XETRACK_DEBUG=1     -O0 -g, asserts on
    XETRACK_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer
    XETRACK_COVERAGE=1  gcov instrumentation
    XETRACK_WERROR=1    warnings are errors (CI)
"""

import glob
import os

import numpy
from setuptools import Extension, setup


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

core = Extension(
    "xetrack_c._core",
    sources=sorted(glob.glob("csrc/*.c")),
    depends=sorted(glob.glob("csrc/*.h")),
    include_dirs=["csrc", numpy.get_include()],
    libraries=["sqlite3", "pthread"],
    define_macros=macros,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=[core])
