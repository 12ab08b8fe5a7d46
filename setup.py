# SPDX-License-Identifier: MIT
"""
setuptools build of hgsmi: the Python package plus the cffi extension
hgsmi._native, compiled from native/src/*.c by native/ffi_build.py.

    pip install -e '.[test]'               # editable; builds hgsmi/_native*.so
    python setup.py build_ext --inplace    # rebuild the extension in place

The version is read from HGSMI_VERSION_* in native/include/hgsmi.h, the
single place it is written.
"""
import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, "native", "include", "hgsmi.h"),
              encoding="utf-8") as f:
        text = f.read()
    parts = [re.search(r"^#define\s+HGSMI_VERSION_%s\s+(\d+)" % p, text, re.M)
             for p in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise RuntimeError("no HGSMI_VERSION_* in native/include/hgsmi.h")
    return ".".join(m.group(1) for m in parts)


setup(
    name="hgsmi",
    version=read_version(),
    description="HGSMI-style shared-memory transport between processes "
                "(C core, cffi bindings)",
    license="MIT",
    python_requires=">=3.9",
    packages=["hgsmi"],
    package_data={"hgsmi": ["py.typed", "*.pyi"]},
    cffi_modules=["native/ffi_build.py:ffibuilder"],
    install_requires=[
        "cffi>=1.16",
        "posix_ipc>=1.1",
    ],
    extras_require={
        "test": ["pytest", "pytest-timeout", "hypothesis", "numpy",
                 "iceoryx2", "faster-fifo", "pyzmq"],  # the bench peers, tested
        # the peers hgsmi bench compares with; each is left out if missing
        "bench": ["pytest-benchmark", "matplotlib", "iceoryx2", "faster-fifo", "pyzmq"],
        "numpy": ["numpy"],
    },
    entry_points={
        "console_scripts": ["hgsmi = hgsmi.cli:main"],
    },
    zip_safe=False,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: C",
        "Operating System :: POSIX :: Linux",
    ],
)
