"""Floating-point precisions a user may choose for the largest products of a prediction.

``TENSOR_PRECISIONS`` maps the names accepted by ``MLCalculator(tensor_precision=...)`` and
``mdplugin md --tensor-precision`` to the numpy type each means.
"""

from __future__ import annotations

import numpy as np

#: ``precision`` of the λ-SOAP means' large products, and the floating-point type each means
TENSOR_PRECISIONS = {"single": np.float32, "double": np.float64}
