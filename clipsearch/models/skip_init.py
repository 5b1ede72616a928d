"""Build a model without initialising its weights, when every weight is loaded next.

open_clip's constructors initialise each weight randomly (``torch.nn.init.*`` from
``nn.Linear.reset_parameters``, ``nn.MultiheadAttention``, and the towers' own
``init_parameters``): for ViT-B-32 that is ~150 M random numbers drawn and thrown away by
the strict `load_state_dict` that follows. Measured on the 2-core development machine while
it was loaded: building ViT-B-32 took 9.0–11.0 s with initialisation and 2.0–2.4 s without,
and the process peaked ~450 MB lower (uninitialised memory is never touched before the
weights overwrite it). This is what Hugging Face transformers' ``no_init_weights`` does.

Only ``torch.nn.init``'s in-place initialisers (and copies of them imported by name into
torch.nn / open_clip / timm / transformers modules) are replaced, for the duration, under a lock;
code building a model without loading every weight afterwards must not use this.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_INITIALISERS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "zeros_",
    "ones_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)
_LOCK = threading.Lock()


def _keep(tensor, *args, **kwargs):
    return tensor


# Modules that may hold an initialiser imported by name (``from torch.nn.init import
# xavier_uniform_``, as torch's MultiheadAttention does): their copies are replaced too.
_MODULE_PREFIXES = ("torch.nn", "open_clip", "timm", "transformers")


@contextmanager
def skip_weight_init() -> Iterator[None]:
    """Within this block ``torch.nn.init`` initialisers leave tensors as they are."""
    import torch

    with _LOCK:
        originals = {
            name: getattr(torch.nn.init, name)
            for name in _INITIALISERS
            if hasattr(torch.nn.init, name)
        }
        by_identity = {id(fn): name for name, fn in originals.items()}
        patched: list[tuple[object, str, object]] = []
        try:
            for mod_name, module in list(sys.modules.items()):
                if module is None or not mod_name.startswith(_MODULE_PREFIXES):
                    continue
                for name in _INITIALISERS:
                    fn = module.__dict__.get(name) if hasattr(module, "__dict__") else None
                    if fn is not None and by_identity.get(id(fn)) == name:
                        patched.append((module, name, fn))
                        setattr(module, name, _keep)
            yield
        finally:
            for module, name, fn in reversed(patched):
                setattr(module, name, fn)
