"""Builds jaxcnn's one compiled piece: the XLA FFI handlers that run convolutions on CPU with
oneDNN (jaxcnn/onednn_ops.cc; see jaxcnn/onednn.py). Everything else is in pyproject.toml.

The build needs a C++17 compiler, jaxlib's XLA FFI headers and oneDNN's headers and library
(the `jaxlib` and `onednn-devel-cpu-gomp` build requirements). It is optional: where it cannot
be built (no compiler, another platform), jaxcnn installs without it and runs every
convolution with XLA's own kernels.
"""

import importlib.util
import os
from importlib import metadata

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _installed_dir(distribution: str, relative: str):
    """The directory holding `relative` among the files the installed `distribution` put down:
    the onednn wheels' headers and library land in the build environment's include/ and lib/."""
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        path = os.path.normpath(str(f.locate()))
        if path.endswith(os.sep + relative):
            return path[: -len(relative) - 1]
    return None


class BuildOneDnnExtension(build_ext):
    def build_extensions(self):
        jaxlib = importlib.util.find_spec("jaxlib")
        headers = _installed_dir("onednn-devel-cpu-gomp", os.path.join("oneapi", "dnnl", "dnnl.hpp"))
        library = _installed_dir("onednn-cpu-gomp", "libdnnl.so")
        for ext in self.extensions:
            if jaxlib is not None:
                ext.include_dirs.append(os.path.join(jaxlib.submodule_search_locations[0], "include"))
            if headers:
                ext.include_dirs.append(headers)
            if library:
                ext.library_dirs.append(library)
        super().build_extensions()


setup(
    ext_modules=[Extension(
        "jaxcnn._onednn_ops", sources=["jaxcnn/onednn_ops.cc"], language="c++", libraries=["dnnl"],
        extra_compile_args=["-std=c++17", "-O3", "-fopenmp"], extra_link_args=["-fopenmp"], optional=True)],
    cmdclass={"build_ext": BuildOneDnnExtension},
)
