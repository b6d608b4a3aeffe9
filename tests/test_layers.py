"""PyTorch-exact layer helpers against torch.nn twins (weights moved with pretrained_converters)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_oracles import to_channels_first, to_channels_last

from mmfa_jax.ops.convolution import conv3d_depth_taps
from mmfa_jax.ops.layers import (
  BatchNorm,
  Conv,
  Dense,
  avg_pool,
  conv,
  conv_implementation,
  max_pool,
  resolved_conv_implementation,
  sequential_running_statistics,
  upsample_nearest,
)
from pretrained_converters.common import take_batchnorm, take_conv, take_dense

torch.manual_seed(0)


@pytest.mark.parametrize(
  ("torch_conv", "size"),
  [
    (torch.nn.Conv2d(3, 8, 7, stride=2, padding=3), (17, 16)),  # 'SAME' would pad (2, 3)
    (torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), (9, 10)),  # 'SAME' would pad (0, 1)
    (torch.nn.Conv2d(4, 6, 1), (5, 5)),
    (torch.nn.Conv2d(6, 6, 3, padding=1, groups=3, bias=False), (6, 7)),
    (torch.nn.Conv3d(4, 5, 3, padding=1), (3, 6, 5)),
    (torch.nn.Conv3d(4, 2, 7, padding=3), (4, 8, 8)),
  ],
)
def test_conv_matches_torch(torch_conv, size):
  in_channels = torch_conv.in_channels
  inputs = np.random.default_rng(0).normal(size=(2, *size, in_channels)).astype(np.float32)
  expected = to_channels_last(torch_conv(to_channels_first(inputs)))
  conv = Conv(
    features=torch_conv.out_channels,
    kernel_size=torch_conv.kernel_size,
    strides=torch_conv.stride,
    padding=torch_conv.padding,
    use_bias=torch_conv.bias is not None,
    feature_group_count=torch_conv.groups,
  )
  # take_conv reads "<prefix>.weight": key the bare module's state_dict under a prefix.
  params = take_conv(
    {f"c.{k}": v.detach().numpy() for k, v in torch_conv.state_dict().items()}, "c"
  )
  got = conv.apply({"params": params}, inputs)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=2e-5)
  # Initialised shapes equal the converted ones.
  init_shapes = jax.tree.map(jnp.shape, conv.init(jax.random.key(0), inputs)["params"])
  assert init_shapes == jax.tree.map(jnp.shape, params)


@pytest.mark.parametrize("implementation", ["native", "depth_taps", "decomposed"])
@pytest.mark.parametrize(
  ("torch_conv", "size"),
  [
    (torch.nn.Conv2d(4, 5, 3, padding=1), (6, 5)),  # window kernel gradient
    (torch.nn.Conv2d(3, 4, 7, padding=3), (8, 7)),  # 49 taps: XLA's kernel gradient
    (torch.nn.Conv2d(4, 6, 3, stride=2, padding=(1, 0), groups=2), (7, 6)),
    (torch.nn.Conv3d(4, 5, 3, padding=1), (3, 6, 5)),
    (torch.nn.Conv3d(3, 2, 7, padding=3), (5, 8, 8)),  # the mask convolution's shape of kernel
    (torch.nn.Conv3d(4, 6, 1), (4, 5, 3)),
    (torch.nn.Conv3d(4, 6, 3, stride=(2, 1, 2), padding=(0, 1, 1)), (7, 5, 6)),
    (torch.nn.Conv3d(4, 6, (2, 3, 1), stride=2, padding=(1, 0, 0), groups=2), (6, 7, 4)),
    # depth taps that read only padding for some output depths, strided in depth
    (torch.nn.Conv3d(3, 4, (5, 3, 3), stride=(2, 1, 1), padding=(2, 1, 1)), (4, 5, 5)),
    (torch.nn.Conv3d(2, 3, 7, padding=3), (2, 4, 4)),  # depth 2: taps 0, 1, 5, 6 read padding
  ],
)
def test_conv_implementations_match_torch_values_and_gradients(torch_conv, size, implementation):
  """Native, depth-tap and decomposed convolutions (window kernel gradients) against torch's
  Conv2d / Conv3d: output, and the gradients of a random projection of it with respect to the
  input and the kernel."""
  rng = np.random.default_rng(1)
  inputs = rng.normal(size=(2, *size, torch_conv.in_channels)).astype(np.float32)
  torch_inputs = to_channels_first(inputs).detach().clone().requires_grad_(True)
  torch_conv.zero_grad()  # the module is shared by the parametrisations
  torch_out = torch_conv(torch_inputs)
  projection = rng.normal(size=torch_out.shape).astype(np.float32)
  (torch_out * torch.tensor(projection)).sum().backward()
  to_flax = (*range(2, torch_conv.weight.ndim), 1, 0)  # (out, in, *k) -> (*k, in, out)
  kernel = np.transpose(torch_conv.weight.detach().numpy(), to_flax)
  strides = torch_conv.stride
  padding = [(p, p) for p in torch_conv.padding]

  def projected(x, k):
    out = conv(
      x, k, strides, padding, feature_group_count=torch_conv.groups, implementation=implementation
    )
    return jnp.sum(out * to_channels_last(torch.tensor(projection))), out

  (_, out), (grad_inputs, grad_kernel) = jax.value_and_grad(
    projected, argnums=(0, 1), has_aux=True
  )(inputs, kernel)
  bias = torch_conv.bias.detach().numpy()
  np.testing.assert_allclose(out + bias, to_channels_last(torch_out.detach()), atol=2e-5)
  np.testing.assert_allclose(grad_inputs, to_channels_last(torch_inputs.grad), atol=5e-5)
  np.testing.assert_allclose(
    grad_kernel, np.transpose(torch_conv.weight.grad.numpy(), to_flax), atol=2e-4
  )


def test_depth_taps_refuse_a_convolution_that_reads_only_padding():
  inputs = jnp.ones((1, 1, 4, 4, 2))
  kernel = jnp.ones((1, 3, 3, 2, 2))
  with pytest.raises(ValueError, match="reads only padding"):
    conv3d_depth_taps(inputs, kernel, (3, 1, 1), ((1, 1), (1, 1), (1, 1)))


def test_conv_implementation_choice(monkeypatch):
  monkeypatch.setenv("MMFA_JAX_CONV", "native")
  assert resolved_conv_implementation() == "native"
  with conv_implementation("decomposed"):
    assert resolved_conv_implementation() == "decomposed"
  monkeypatch.setenv("MMFA_JAX_CONV", "auto")
  expected = "depth_taps" if jax.default_backend() == "cpu" else "native"
  assert resolved_conv_implementation() == expected
  monkeypatch.setenv("MMFA_JAX_CONV", "fast")
  with pytest.raises(ValueError, match="MMFA_JAX_CONV"):
    resolved_conv_implementation()
  # bfloat16 inputs: depth-tap partial sums stay in float32, the result is bfloat16.
  x = jnp.ones((1, 4, 3, 3, 2), jnp.bfloat16)
  k = jnp.full((3, 1, 1, 2, 1), 0.1, jnp.bfloat16)
  out = conv(x, k, (1, 1, 1), [(1, 1), (0, 0), (0, 0)], implementation="decomposed")
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(
    np.asarray(out[0, :, 0, 0, 0], np.float32), [0.4, 0.6, 0.6, 0.4], rtol=1e-2
  )
  grad = jax.grad(lambda w: jnp.sum(conv(x, w, (1, 1, 1), [(1, 1), (0, 0), (0, 0)],
                                         implementation="decomposed").astype(jnp.float32)))(k)  # fmt: skip
  # d/dk = sum of the inputs each tap reads (ones): 9 (H x W) per depth slice read; with padding
  # 1 the outer taps read 3 of the 4 slices, the middle tap all 4. Kernel order (tap, channel).
  assert grad.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(grad, np.float32).ravel(), [27, 27, 36, 36, 27, 27])


def test_default_init_is_torch_uniform():
  conv = Conv(features=64, kernel_size=(3, 3))
  params = conv.init(jax.random.key(1), jnp.zeros((1, 8, 8, 32)))["params"]
  bound = 1 / np.sqrt(3 * 3 * 32)
  for name in ("kernel", "bias"):
    values = np.asarray(params[name])
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.9 * bound
  np.testing.assert_allclose(np.std(params["kernel"]), bound / np.sqrt(3), rtol=0.05)


def test_dense_matches_torch():
  linear = torch.nn.Linear(12, 5)
  inputs = np.random.default_rng(1).normal(size=(3, 12)).astype(np.float32)
  params = take_dense({f"fc.{k}": v.detach().numpy() for k, v in linear.state_dict().items()}, "fc")
  got = Dense(5).apply({"params": params}, inputs)
  np.testing.assert_allclose(got, linear(torch.from_numpy(inputs)).detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("torch_bn_cls", [torch.nn.BatchNorm2d, torch.nn.BatchNorm3d])
def test_batchnorm_train_and_eval_match_torch(torch_bn_cls):
  """Training-mode output, running statistics (unbiased variance) and eval output all agree."""
  rng = np.random.default_rng(2)
  num_spatial = 2 if torch_bn_cls is torch.nn.BatchNorm2d else 3
  torch_bn = torch_bn_cls(6)
  with torch.no_grad():
    torch_bn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, 6).astype(np.float32)))
    torch_bn.bias.copy_(torch.from_numpy(rng.normal(size=6).astype(np.float32)))
  state = {f"bn.{k}": v.detach().numpy().copy() for k, v in torch_bn.state_dict().items()}
  params, stats = take_batchnorm(state, "bn")
  variables = {"params": params, "batch_stats": stats}
  bn = BatchNorm()
  torch_bn.train()
  for step in range(3):
    inputs = rng.normal(2.0, 3.0, size=(4, *(5,) * num_spatial, 6)).astype(np.float32)
    expected = to_channels_last(torch_bn(to_channels_first(inputs)))
    got, updates = bn.apply(variables, inputs, use_running_average=False, mutable=["batch_stats"])
    variables = {"params": params, "batch_stats": updates["batch_stats"]}
    np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=f"step {step}")
  np.testing.assert_allclose(variables["batch_stats"]["mean"], torch_bn.running_mean, atol=1e-5)
  np.testing.assert_allclose(variables["batch_stats"]["var"], torch_bn.running_var, atol=1e-4)
  torch_bn.eval()
  inputs = rng.normal(size=(2, *(4,) * num_spatial, 6)).astype(np.float32)
  expected = to_channels_last(torch_bn(to_channels_first(inputs)))
  got = bn.apply(variables, inputs, use_running_average=True)
  np.testing.assert_allclose(got, expected, atol=2e-5)


def test_conv_batchnorm_gradients_match_torch():
  """Gradients through conv + training-mode BatchNorm w.r.t. input and every parameter."""
  rng = np.random.default_rng(3)
  torch_conv, torch_bn = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.BatchNorm2d(4)
  inputs = rng.normal(size=(2, 9, 9, 3)).astype(np.float32)
  cotangent = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
  x = to_channels_first(inputs).requires_grad_(True)
  (torch_bn(torch_conv(x)) * to_channels_first(cotangent)).sum().backward()

  state = {f"c.{k}": v.detach().numpy() for k, v in torch_conv.state_dict().items()}
  state.update({f"bn.{k}": v.detach().numpy() for k, v in torch_bn.state_dict().items()})
  bn_params, bn_stats = take_batchnorm(state, "bn")
  params = {"conv": take_conv(state, "c"), "bn": bn_params}

  def loss(params, inputs):
    h = Conv(4, (3, 3), strides=2, padding=1).apply({"params": params["conv"]}, inputs)
    out, _ = BatchNorm().apply(
      {"params": params["bn"], "batch_stats": bn_stats}, h, False, mutable=["batch_stats"]
    )
    return jnp.sum(out * cotangent)

  d_params, d_inputs = jax.grad(loss, argnums=(0, 1))(params, inputs)
  np.testing.assert_allclose(d_inputs, to_channels_last(x.grad), atol=1e-4)
  np.testing.assert_allclose(
    d_params["conv"]["kernel"],
    np.transpose(torch_conv.weight.grad.numpy(), (2, 3, 1, 0)),
    atol=1e-4,
  )
  np.testing.assert_allclose(d_params["conv"]["bias"], torch_conv.bias.grad.numpy(), atol=1e-4)
  np.testing.assert_allclose(d_params["bn"]["scale"], torch_bn.weight.grad.numpy(), atol=1e-4)
  np.testing.assert_allclose(d_params["bn"]["bias"], torch_bn.bias.grad.numpy(), atol=1e-4)


@pytest.mark.parametrize("torch_bn_cls", [torch.nn.BatchNorm2d, torch.nn.BatchNorm3d])
def test_batchnorm_closed_form_gradients_match_torch_and_autodiff(torch_bn_cls):
  """The training-mode BatchNorm's closed-form backward (``_batch_normalize``) against PyTorch's
  autograd and against JAX differentiating the same formula, also under ``vmap`` (the motion
  estimator's batched calls)."""
  rng = np.random.default_rng(7)
  num_spatial = 2 if torch_bn_cls is torch.nn.BatchNorm2d else 3
  inputs = rng.normal(1.5, 2.0, size=(2, 3, *(4,) * num_spatial, 5)).astype(np.float32)
  cotangent = rng.normal(size=inputs.shape).astype(np.float32)
  scale = rng.uniform(0.5, 1.5, 5).astype(np.float32)
  bias = rng.normal(size=5).astype(np.float32)
  variables = {
    "params": {"scale": scale, "bias": bias},
    "batch_stats": {"mean": np.zeros(5, np.float32), "var": np.ones(5, np.float32)},
  }

  def loss(params, x):
    out, _ = BatchNorm().apply(
      {"params": params, "batch_stats": variables["batch_stats"]}, x, False, mutable=True
    )
    return out

  def batched(params, x):
    outs = jax.vmap(lambda xi: loss(params, xi))(x)
    return jnp.sum(outs * cotangent)

  closed = jax.grad(batched, argnums=(0, 1))(variables["params"], inputs)

  def formula(params, x):  # the same BatchNorm written out, differentiated by JAX
    axes = tuple(range(1, x.ndim - 1))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    out = (x - mean) / jnp.sqrt(var + 1e-5) * params["scale"] + params["bias"]
    return jnp.sum(out * cotangent)

  autodiff = jax.grad(formula, argnums=(0, 1))(variables["params"], inputs)
  for got, want in zip(jax.tree.leaves(closed), jax.tree.leaves(autodiff)):
    np.testing.assert_allclose(got, want, atol=2e-5)

  for call in range(inputs.shape[0]):
    torch_bn = torch_bn_cls(5).train()
    with torch.no_grad():
      torch_bn.weight.copy_(torch.from_numpy(scale))
      torch_bn.bias.copy_(torch.from_numpy(bias))
    x = to_channels_first(inputs[call]).requires_grad_(True)
    (torch_bn(x) * to_channels_first(cotangent[call])).sum().backward()
    np.testing.assert_allclose(closed[1][call], to_channels_last(x.grad), atol=2e-5)
    if call == 0:
      d_scale, d_bias = torch_bn.weight.grad.numpy(), torch_bn.bias.grad.numpy()
    else:
      d_scale, d_bias = d_scale + torch_bn.weight.grad.numpy(), d_bias + torch_bn.bias.grad.numpy()
  np.testing.assert_allclose(closed[0]["scale"], d_scale, atol=1e-4)
  np.testing.assert_allclose(closed[0]["bias"], d_bias, atol=1e-4)


def test_bfloat16_compute_keeps_float32_params():
  conv = Conv(8, (3, 3), padding=1, dtype=jnp.bfloat16)
  bn = BatchNorm(dtype=jnp.bfloat16)
  x = jnp.ones((1, 4, 4, 3), jnp.float32)
  conv_vars = conv.init(jax.random.key(0), x)
  assert conv_vars["params"]["kernel"].dtype == jnp.float32
  h = conv.apply(conv_vars, x)
  assert h.dtype == jnp.bfloat16
  bn_vars = bn.init(jax.random.key(0), h, use_running_average=False)
  out, _ = bn.apply(bn_vars, h, use_running_average=False, mutable=["batch_stats"])
  assert out.dtype == jnp.bfloat16 and bn_vars["params"]["scale"].dtype == jnp.float32


def test_upsample_and_pooling_match_torch():
  rng = np.random.default_rng(4)
  image = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  volume = rng.normal(size=(2, 3, 5, 7, 3)).astype(np.float32)
  t_image, t_volume = to_channels_first(image), to_channels_first(volume)
  nn_f = torch.nn.functional
  np.testing.assert_array_equal(
    upsample_nearest(image, (2, 2)), to_channels_last(nn_f.interpolate(t_image, scale_factor=2))
  )
  np.testing.assert_array_equal(
    upsample_nearest(volume, (1, 2, 2)),
    to_channels_last(nn_f.interpolate(t_volume, scale_factor=(1, 2, 2))),
  )
  np.testing.assert_allclose(
    avg_pool(image, (2, 2)), to_channels_last(torch.nn.AvgPool2d(2)(t_image)), atol=1e-6
  )
  np.testing.assert_allclose(
    avg_pool(volume, (1, 2, 2)),
    to_channels_last(torch.nn.AvgPool3d((1, 2, 2))(t_volume)),
    atol=1e-6,
  )
  negative = -np.abs(image) - 1  # zero padding would win the max at the borders; -inf must not
  np.testing.assert_array_equal(
    max_pool(negative, (3, 3), (2, 2), 1),
    to_channels_last(torch.nn.MaxPool2d(3, 2, 1)(to_channels_first(negative))),
  )
  with pytest.raises(ValueError, match="factors"):
    upsample_nearest(image, (2, 2, 2))


def test_batched_calls_leave_the_running_statistics_of_calls_in_order():
  """Three BatchNorm training calls batched with vmap, composed by
  ``sequential_running_statistics``, against PyTorch's BatchNorm2d called three times in order."""
  rng = np.random.default_rng(5)
  spread = np.array([1.0, 3.0, 0.5], np.float32)[:, None, None, None, None]
  inputs = rng.normal(size=(3, 4, 5, 5, 6)).astype(np.float32) * spread  # (calls, B, H, W, C)
  inputs = inputs + np.arange(3, dtype=np.float32)[:, None, None, None, None]
  bn = BatchNorm()
  start = {
    "mean": rng.normal(size=6).astype(np.float32),
    "var": rng.uniform(0.5, 2.0, size=6).astype(np.float32),
  }
  variables = {
    "params": {"scale": np.ones(6, np.float32), "bias": np.zeros(6, np.float32)},
    "batch_stats": start,
  }

  def one(x):
    out, updated = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    return out, updated["batch_stats"]

  outputs, per_call = jax.vmap(one)(inputs)
  composed = sequential_running_statistics(start, per_call)

  torch_bn = torch.nn.BatchNorm2d(6)
  with torch.no_grad():
    torch_bn.running_mean.copy_(torch.from_numpy(start["mean"]))
    torch_bn.running_var.copy_(torch.from_numpy(start["var"]))
  torch_bn.train()
  for x, out in zip(inputs, outputs):
    want = torch_bn(to_channels_first(x))
    np.testing.assert_allclose(out, to_channels_last(want.detach()), atol=1e-5)
  np.testing.assert_allclose(composed["mean"], torch_bn.running_mean.numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(composed["var"], torch_bn.running_var.numpy(), rtol=1e-6, atol=1e-6)

  # Statistics no call changed come back bit for bit; only moving averages can be composed.
  untouched = sequential_running_statistics(start, jax.tree.map(lambda s: np.stack([s] * 3), start))
  np.testing.assert_array_equal(untouched["mean"], start["mean"])
  with pytest.raises(ValueError, match="moving averages"):
    sequential_running_statistics({"u": start["mean"]}, {"u": per_call["mean"]})


def test_existing_parameters_are_shape_checked_without_tracing_their_initialisers(monkeypatch):
  """Applying a model does not evaluate each parameter's initialiser abstractly (flax's check,
  about 4 ms per parameter per trace); a parameter of the wrong shape is still refused, by name."""
  import flax

  from mmfa_jax.ops.layers import BatchNorm, Conv, Dense

  class Net(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, x):
      x = Conv(4, 3, padding=1, name="conv")(x)
      x = BatchNorm(use_running_average=True, name="norm")(x)
      return Dense(2, name="head")(x.mean(axis=(1, 2)))

  x = np.ones((1, 8, 8, 3), np.float32)
  variables = Net().init(jax.random.key(0), x)
  evaluated = []
  original = jax.eval_shape
  monkeypatch.setattr(jax, "eval_shape", lambda *a, **k: evaluated.append(a) or original(*a, **k))
  out = jax.jit(Net().apply)(variables, x)
  assert out.shape == (1, 2) and evaluated == []

  wrong = jax.tree_util.tree_map(lambda v: v, flax.core.unfreeze(variables))
  wrong["params"]["conv"]["kernel"] = np.zeros((3, 3, 3, 5), np.float32)
  with pytest.raises(flax.errors.ScopeParamShapeError, match=r"kernel.*/conv.*\(3, 3, 3, 5\)"):
    Net().apply(wrong, x)
