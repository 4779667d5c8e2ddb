"""jaxcnn: convolutional networks in JAX/Flax with the Keras workflow.

Submodules are imported on demand so that `import jaxcnn` (and the CLI's quick
commands) stay fast; TensorFlow is only loaded by the TFDS data path.
"""

import os as _os

# TensorFlow only decodes data and writes TensorBoard events here; keep its import quiet
# (its C++ INFO lines, and the oneDNN notice, which concerns TF's own math, unused here).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__version__ = "0.1.0"
