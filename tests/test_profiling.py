"""Per-operation time tables: HLO parsing, name scopes, grouping, and a real trace."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfa_jax import profiling

HLO = """HloModule jit_step, is_scheduled=true

%fused_computation (param_0.2: f32[1,4,4,2], param_1.1: f32[3,3,2,2]) -> f32[1,4,4,2] {
  %param_0.2 = f32[1,4,4,2]{3,2,1,0} parameter(0)
  %param_1.1 = f32[3,3,2,2]{3,2,1,0} parameter(1)
  %convolution.3 = f32[1,4,4,2]{3,2,1,0} convolution(%param_0.2, %param_1.1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(step)/jvp(Model)/generator/conv/conv_general_dilated" stack_frame_id=3}
  ROOT %tanh.0 = f32[1,4,4,2]{3,2,1,0} tanh(%convolution.3), metadata={op_name="jit(step)/jvp(Model)/tanh"}
}

%fused_computation.1 (param_0.5: f32[8]) -> f32[8] {
  %param_0.5 = f32[8]{0} parameter(0)
  ROOT %multiply.2 = f32[8]{0} multiply(%param_0.5, %param_0.5)
}

ENTRY %main.9 (x.1: f32[1,4,4,2], k.1: f32[3,3,2,2], v.1: f32[8], w.1: f32[8,8]) -> (f32[1,4,4,2], f32[8]) {
  %x.1 = f32[1,4,4,2]{3,2,1,0} parameter(0), metadata={op_name="x"}
  %k.1 = f32[3,3,2,2]{3,2,1,0} parameter(1), metadata={op_name="k"}
  %v.1 = f32[8]{0} parameter(2)
  %w.1 = f32[8,8]{1,0} parameter(3)
  %tanh_fusion = f32[1,4,4,2]{3,2,1,0} fusion(%x.1, %k.1), kind=kOutput, calls=%fused_computation
  %square = f32[8]{0} fusion(%v.1), kind=kLoop, calls=%fused_computation.1, metadata={op_name="jit(step)/transpose(jvp(Model))/generator/conv/mul"}
  %dot.4 = f32[8]{0} dot(%w.1, %square), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(step)/transpose(jvp(Model))/discriminator/dot_general"}
  ROOT %tuple.5 = (f32[1,4,4,2]{3,2,1,0}, f32[8]{0}) tuple(%tanh_fusion, %dot.4)
}
"""


def test_parse_hlo_module_categories_and_names():
  instructions = profiling.parse_hlo_module(HLO)
  assert instructions["tanh_fusion"].category == "fusion:convolution"
  assert instructions["square"].category == "fusion:elementwise"
  assert instructions["dot.4"].category == "dot"
  assert instructions["tuple.5"].category == "tuple"
  assert instructions["convolution.3"].category == "convolution"  # inside the fusion
  assert instructions["x.1"].op_name == "x"
  # a fusion without metadata takes its convolution's name stack (not the tanh's)
  assert instructions["tanh_fusion"].op_name.endswith("generator/conv/conv_general_dilated")
  assert (
    instructions["dot.4"].op_name == "jit(step)/transpose(jvp(Model))/discriminator/dot_general"
  )
  assert instructions["v.1"].op_name == ""


@pytest.mark.parametrize(
  "op_name, depth, expected",
  [
    (
      "jit(step)/transpose(jvp(Model))/generator/conv/conv_general_dilated",
      2,
      ("Model/generator", True),
    ),
    (
      "jit(step)/jvp(Model)/generator/conv/conv_general_dilated",
      3,
      ("Model/generator/conv", False),
    ),
    ("jit(step)/tanh", 2, ("(top level)", False)),
    ("", 2, ("(top level)", False)),
    ("jit(f)/vmap(jvp(Net))/block/add", 5, ("Net/block", False)),
    (  # a step run from its exported program (traced_steps)
      "jit(run)/call_exported/_flat_step/transpose(jvp(VGG19))/features_2/conv/conv_general_dilated",
      2,
      ("VGG19/features_2", True),
    ),
  ],
)
def test_name_scope(op_name, depth, expected):
  assert profiling.name_scope(op_name, depth) == expected


def test_time_table_groups_and_shares():
  instructions = profiling.parse_hlo_module(HLO)
  seconds = {"tanh_fusion": 3.0, "square": 1.0, "dot.4": 4.0}
  by_category = profiling.time_table(instructions, seconds, "category")
  assert [(r.key, r.seconds, r.count) for r in by_category] == [
    ("dot", 4.0, 1),
    ("fusion:convolution", 3.0, 1),
    ("fusion:elementwise", 1.0, 1),
  ]
  assert by_category[0].share == pytest.approx(0.5)
  by_scope = profiling.time_table(instructions, seconds, "scope", depth=1)
  assert [(r.key, r.seconds) for r in by_scope] == [("Model (bwd)", 5.0), ("Model", 3.0)]
  by_scope = profiling.time_table(instructions, seconds, "scope", depth=2)
  assert {r.key: r.seconds for r in by_scope} == {
    "Model/discriminator (bwd)": 4.0,
    "Model/generator": 3.0,
    "Model/generator (bwd)": 1.0,
  }
  with pytest.raises(ValueError, match="category"):
    profiling.time_table(instructions, seconds, "module")
  table = profiling.format_table("by category", by_category, top=1)
  assert "50.0%" in table and "(2 more)" in table


def test_thunk_seconds_of_a_real_trace(tmp_path):
  """A traced jitted convolution: its thunk events join the optimized HLO's instruction names."""

  @jax.jit
  def step(x, k):
    y = jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jnp.tanh(y).sum()

  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 8)), jnp.float32)
  k = jnp.ones((3, 3, 8, 8), jnp.float32)
  instructions = profiling.parse_hlo_module(step.lower(x, k).compile().as_text())
  step(x, k).block_until_ready()
  with jax.profiler.trace(str(tmp_path)):
    step(x, k).block_until_ready()
  (trace,) = glob.glob(os.path.join(tmp_path, "**", "*.xplane.pb"), recursive=True)
  seconds = profiling.thunk_seconds(trace, instructions)
  assert seconds and set(seconds) <= set(instructions)
  categories = {instructions[name].category for name in seconds}
  assert categories & {"convolution", "fusion:convolution"}
  assert all(value > 0 for value in seconds.values())


_GPU_TRACE = """
planes {
  id: 1
  name: "/device:GPU:0"
  lines {
    id: 1
    name: "Stream #7(Compute)"
    events { metadata_id: 1 offset_ps: 0 duration_ps: 5000000 stats { metadata_id: 9 str_value: "fusion.3" } }
    events { metadata_id: 2 offset_ps: 6000000 duration_ps: 2000000 stats { metadata_id: 9 str_value: "custom-call.1" } }
    events { metadata_id: 2 offset_ps: 9000000 duration_ps: 1000000 stats { metadata_id: 9 str_value: "custom-call.1" } }
    events { metadata_id: 3 offset_ps: 11000000 duration_ps: 7000000 stats { metadata_id: 9 str_value: "other.1" } }
  }
  event_metadata { key: 1 value { id: 1 name: "loop_add_fusion" } }
  event_metadata { key: 2 value { id: 2 name: "sm90_xmma_fprop_implicit_gemm" } }
  event_metadata { key: 3 value { id: 3 name: "memcpy" } }
  stat_metadata { key: 9 value { id: 9 name: "hlo_op" } }
}
planes {
  id: 2
  name: "/host:CPU"
  lines {
    id: 2
    name: "thunk executor"
    events { metadata_id: 1 offset_ps: 0 duration_ps: 40000000 }
  }
  event_metadata { key: 1 value { id: 1 name: "custom-call.1" } }
}
"""


def test_gpu_kernels_count_for_the_instruction_their_hlo_op_names():
  """On an accelerator the device kernels' times count, by their ``hlo_op`` statistic (not by the
  kernel's own name); the host's launch events of the same instructions are left out. A trace
  without device planes (CPU) falls back to the host's thunk events."""
  from jax.profiler import ProfileData

  wanted = {"fusion.3", "custom-call.1"}
  gpu = profiling._seconds_by_instruction(ProfileData.from_text_proto(_GPU_TRACE), wanted)
  assert gpu == pytest.approx({"fusion.3": 5e-6, "custom-call.1": 3e-6})
  host_only = _GPU_TRACE[_GPU_TRACE.index("planes {\n  id: 2") :]
  cpu = profiling._seconds_by_instruction(ProfileData.from_text_proto(host_only), wanted)
  assert cpu == pytest.approx({"custom-call.1": 40e-6})
