"""The reference's HEEstimator state_dict -> mmfa_jax ``HEEstimator`` variables.

The trunk's modules sit at the top level of the torch module (``conv1``, ``block1.b1_0``, ...) and
under ``trunk`` in Flax. The reference's heads are misnamed (its issue #58): its ``fc_roll`` is
trained to predict **yaw** and its ``fc_yaw`` roll, so they are swapped here, and ``fc_yaw`` in
mmfa_jax predicts yaw.
"""

from __future__ import annotations

from pretrained_converters.common import NameMap

NAMES = NameMap(renames=(("trunk", ""), ("fc_yaw", "fc_roll"), ("fc_roll", "fc_yaw")))
convert = NAMES.converter("he_estimator")
