# SPDX-License-Identifier: MIT
"""
setuptools build of hgsmi: the Python package plus the cffi extension
hgsmi._native, compiled from native/src/*.c by native/ffi_build.py.

    pip install -e '.[test]'               # editable; builds hgsmi/_native*.so
    python setup.py build_ext --inplace    # rebuild the extension in place

The version is read from HGSMI_VERSION_* in native/include/hgsmi.h, the
single place it is written.

The extension uses only the stable ABI (cffi builds it with Py_LIMITED_API:
hgsmi/_native.abi3.so), so the wheel is tagged cp311-abi3 and installs on
every CPython from 3.11 on.  3.11 is the floor because the config reader uses
the standard library's tomllib.
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# The oldest Python hgsmi runs on, and the abi3 tag its wheel carries.
PYTHON_MIN = (3, 11)


def read_version():
    with open(os.path.join(HERE, "native", "include", "hgsmi.h"),
              encoding="utf-8") as f:
        text = f.read()
    parts = [re.search(rf"^#define\s+HGSMI_VERSION_{p}\s+(\d+)", text, re.M)
             for p in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise RuntimeError("no HGSMI_VERSION_* in native/include/hgsmi.h")
    return ".".join(m.group(1) for m in parts)


def read_readme():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        return f.read()


setup(
    name="hgsmi",
    version=read_version(),
    description="HGSMI-style shared-memory transport between processes "
                "(C core, cffi bindings)",
    long_description=read_readme(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">={}.{}".format(*PYTHON_MIN),
    packages=find_packages(include=["hgsmi", "hgsmi.*"]),
    # hgsmi bench compiles its C programs from these on first use (into a
    # per-user cache: hgsmi/bench/transports/cbuild.py).
    package_data={"hgsmi": ["py.typed", "*.pyi"], "hgsmi.bench": ["c/*.c", "c/*.h"]},
    cffi_modules=["native/ffi_build.py:ffibuilder"],
    install_requires=[
        "cffi>=1.16",
    ],
    extras_require={
        "test": ["pytest", "pytest-timeout", "hypothesis", "numpy", "mypy", "ruff",
                 "iceoryx2", "faster-fifo", "pyzmq"],  # the bench peers, tested
        # the peers hgsmi bench compares with; each is left out if missing
        "bench": ["pytest-benchmark", "matplotlib", "iceoryx2", "faster-fifo", "pyzmq"],
        "numpy": ["numpy"],
    },
    entry_points={
        "console_scripts": ["hgsmi = hgsmi.cli:main"],
    },
    zip_safe=False,
    options={"bdist_wheel": {"py_limited_api": "cp{}{}".format(*PYTHON_MIN)}},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: Implementation :: CPython",
        "Typing :: Typed",
        "Programming Language :: C",
        "Operating System :: POSIX :: Linux",
    ],
)
