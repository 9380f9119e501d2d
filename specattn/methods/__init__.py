"""KV-selection methods. Each lives in its own module and has a ``conf/method/<name>.yaml``:

==========  ==========================================  =======================
name        class                                       config
==========  ==========================================  =======================
dense       :class:`specattn.methods.dense.Dense`        ``conf/method/dense.yaml``
specattn    :class:`specattn.methods.specattn.SpecAttn`  ``conf/method/specattn.yaml``
==========  ==========================================  =======================
"""

from .base import LayerView, SampleContext, SelectionMethod
from .dense import Dense
from .specattn import SpecAttn

__all__ = ["LayerView", "SampleContext", "SelectionMethod", "Dense", "SpecAttn"]
