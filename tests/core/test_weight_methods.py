"""Weight methods: GPTQ against minmax on correlated inputs, its structure (blocks, groups, dead columns,
damping), determinism, and SSZ's per-row refit (algorithms.md §3.4–3.5)."""

from __future__ import annotations

import pytest
import torch

from modelslim_core.errors import QuantizationError
from modelslim_core.protocol.qconfig import QConfig
from modelslim_core.quant.gptq import GPTQWeight, GramCache, HessianAccumulator, gptq_quantize
from modelslim_core.quant.int_affine import compute_qparams
from modelslim_core.quant.minmax import MinMaxIntWeight, minmax_weight_qparams, quantize_int_weight
from modelslim_core.quant.ssz import SSZWeight, ssz_scales
from modelslim_core.quant.weight_formats import IntWeight

OUT, IN, TOKENS = 48, 128, 1024


@pytest.fixture(scope="module")
def layer() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random weight and correlated inputs (a shared low-rank component plus one loud channel), and H."""
    generator = torch.Generator().manual_seed(0)
    mixing = torch.eye(IN) + 2 * torch.randn(IN, IN, generator=generator) / IN**0.5
    x = torch.randn(TOKENS, IN, generator=generator) @ mixing
    x[:, 5] *= 8
    weight = 0.05 * torch.randn(OUT, IN, generator=generator)
    accumulator = HessianAccumulator(IN, torch.device("cpu"))
    for batch in x.split(300):
        accumulator.update(batch)
    return weight, x, accumulator.hessian()


def output_error(x: torch.Tensor, weight: torch.Tensor, quantized: IntWeight) -> float:
    reference = x @ weight.T
    return ((x @ quantized.dequantize().T - reference).norm() / reference.norm()).item()


def minmax(weight: torch.Tensor, bits: int, symmetric: bool, group_size: int) -> IntWeight:
    return quantize_int_weight(weight, *minmax_weight_qparams(weight, bits, symmetric, group_size), bits, group_size)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group_size", [0, 32], ids=["per_channel", "per_group32"])
def test_gptq_output_error_is_lower_than_minmax(layer, bits, symmetric, group_size):
    weight, x, hessian = layer
    gptq = gptq_quantize(weight, hessian, bits, symmetric, group_size)
    baseline = output_error(x, weight, minmax(weight, bits, symmetric, group_size))
    assert output_error(x, weight, gptq) < 0.8 * baseline
    lo, hi = (-8, 7) if bits == 4 else (-128, 127)
    assert gptq.codes.dtype == torch.int8 and lo <= gptq.codes.min() and gptq.codes.max() <= hi
    groups = IN // group_size if group_size else 1
    assert gptq.scale.shape == gptq.offset.shape == (OUT, groups)
    assert gptq.group_size == group_size
    if symmetric:
        assert gptq.offset.abs().sum() == 0


def test_gptq_hessian_is_the_mean_outer_product_over_all_batches(layer):
    _, x, hessian = layer
    assert torch.allclose(hessian, 2 * x.T @ x / TOKENS, rtol=1e-4, atol=1e-3)


def test_linears_reading_one_input_tensor_share_its_gram_product(layer):
    _, x, hessian = layer
    cache = GramCache()
    q_proj, k_proj = (HessianAccumulator(IN, torch.device("cpu"), cache) for _ in range(2))
    for batch in x.split(300):
        raw = batch.clone()
        q_proj.update(raw, key=raw)
        k_proj.update(torch.zeros_like(raw), key=raw)  # same raw input: the cached product is reused, not recomputed
    assert torch.allclose(q_proj.hessian(), hessian, rtol=1e-4, atol=1e-3)
    assert torch.equal(k_proj.sum, q_proj.sum) and k_proj.tokens == TOKENS
    raw = x[:10].clone()
    q_proj.update(raw, key=raw)
    raw.mul_(2)  # changed in place: its version moves, so the next linear computes its own product
    before = k_proj.sum.clone()
    k_proj.update(raw, key=raw)
    assert torch.allclose(k_proj.sum - before, raw.T @ raw, rtol=1e-5, atol=1e-4)


def test_gptq_is_deterministic_and_block_size_only_reorders_the_arithmetic(layer):
    weight, _, hessian = layer
    first = gptq_quantize(weight, hessian, 4, False, 32, block_size=128)
    again = gptq_quantize(weight, hessian, 4, False, 32, block_size=128)
    assert torch.equal(first.codes, again.codes) and torch.equal(first.scale, again.scale)
    # lazy block updates (and group parameters taken after the pending update) are an exact reformulation:
    # a block size that does not even divide the group size changes only float rounding, not one code
    small_blocks = gptq_quantize(weight, hessian, 4, False, 32, block_size=7)
    assert torch.equal(small_blocks.codes, first.codes)
    assert torch.allclose(small_blocks.scale, first.scale, rtol=1e-5)


def test_gptq_dead_input_columns_get_zero_weights(layer):
    weight, x, _ = layer
    x = x.clone()
    x[:, [3, 70]] = 0
    accumulator = HessianAccumulator(IN, torch.device("cpu"))
    accumulator.update(x)
    quantized = gptq_quantize(weight, accumulator.hessian(), 4, False, 0)
    assert quantized.dequantize()[:, [3, 70]].abs().max() == 0
    assert output_error(x, weight, quantized) < output_error(x, weight, minmax(weight, 4, False, 0))


def test_gptq_per_group_parameters_follow_the_updated_weights(layer):
    weight, _, hessian = layer
    quantized = gptq_quantize(weight, hessian, 4, True, 32, act_order=False, clip_search=False)
    # every group's scale fits its own (updated) columns: codes use the full int4 range somewhere in the group
    codes = quantized.codes.reshape(OUT, IN // 32, 32).abs()
    assert (codes.amax(dim=-1) >= 7).float().mean() > 0.9
    assert not torch.allclose(quantized.scale, minmax_weight_qparams(weight, 4, True, 32)[0])


@pytest.mark.parametrize("group_size", [0, 32], ids=["per_channel", "per_group32"])
def test_gptq_act_order_uses_static_groups_in_the_saved_layout_and_lowers_the_error(layer, group_size):
    weight, x, hessian = layer
    ordered = gptq_quantize(weight, hessian, 4, True, group_size, act_order=True, clip_search=False)
    plain = gptq_quantize(weight, hessian, 4, True, group_size, act_order=False, clip_search=False)
    assert output_error(x, weight, ordered) < output_error(x, weight, plain)
    assert output_error(x, weight, ordered) < 0.8 * output_error(x, weight, minmax(weight, 4, True, group_size))
    # static groups: every group's scale comes from the range of the ORIGINAL weight's contiguous columns
    groups = weight.reshape(OUT, -1, group_size or IN)
    static, _ = compute_qparams(groups.amin(dim=-1), groups.amax(dim=-1), 4, True, full_range=True)
    assert torch.equal(ordered.scale, static)
    assert ordered.codes.shape == (OUT, IN) and ordered.group_size == group_size


def test_gptq_with_a_diagonal_hessian_rounds_to_the_nearest_point_of_the_full_range_grid(layer):
    """Without input correlations GPTQ has no error to spread: it is round-to-nearest on its grid, which with
    the plain range (clip_search off) and full_range (the int4 default) is max|w| / 7.5 per row and reaches
    code -8."""
    weight, _, _ = layer
    quantized = gptq_quantize(weight, torch.eye(IN), 4, True, 0, clip_search=False)
    scale = weight.abs().amax(dim=1, keepdim=True) / 7.5
    assert torch.allclose(quantized.scale, scale)
    assert torch.equal(quantized.codes.float(), torch.clamp(torch.round(weight / scale), -8, 7))
    restricted = gptq_quantize(weight, torch.eye(IN), 4, True, 0, full_range=False, clip_search=False)
    assert torch.allclose(restricted.scale, weight.abs().amax(dim=1, keepdim=True) / 7)
    assert restricted.codes.min() >= -7


def test_gptq_act_order_with_an_already_sorted_hessian_changes_nothing_per_channel():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(512, 16, generator=generator) * torch.exp(-0.3 * torch.arange(16))  # diag(H) decreasing
    weight = torch.randn(8, 16, generator=generator)
    hessian = x.T @ x * (2 / 512)
    assert torch.equal(torch.argsort(torch.diag(hessian), descending=True), torch.arange(16))
    ordered = gptq_quantize(weight, hessian, 4, False, 0, act_order=True)
    plain = gptq_quantize(weight, hessian, 4, False, 0, act_order=False)
    assert torch.equal(ordered.codes, plain.codes) and torch.equal(ordered.scale, plain.scale)


def test_gptq_damping_rescues_a_singular_hessian_and_degenerate_data_is_named(layer, caplog):
    weight, _, _ = layer
    rank_one = torch.ones(IN, IN)  # singular: plain Cholesky fails without damping
    quantized = gptq_quantize(weight, rank_one, 8, True, 0, percdamp=1e-9, name="model.layers.0.mlp.up_proj")
    assert torch.isfinite(quantized.dequantize()).all()
    assert "not positive definite" in caplog.text
    with pytest.raises(QuantizationError, match="model.layers.0.mlp.up_proj: GPTQ cannot factorise"):
        gptq_quantize(weight, torch.full((IN, IN), float("nan")), 8, True, 0, name="model.layers.0.mlp.up_proj")


def test_gptq_quantizer_reads_its_ext_keys(layer):
    weight, x, hessian = layer
    qconfig = QConfig(dtype="int4", scope="per_group", symmetric=False, method="gptq",
                      ext={"percdamp": 0.1, "block_size": 16, "group_size": 64, "act_order": True})
    method = GPTQWeight(qconfig)
    assert method.needs_data
    assert method.shape_problems(OUT, 96) == ["ext.group_size 64 does not divide its input dimension 96"]
    quantized = method.quantize(weight, hessian)
    expected = gptq_quantize(weight, hessian, 4, False, 64, percdamp=0.1, block_size=16, act_order=True)
    assert torch.equal(quantized.codes, expected.codes) and quantized.scale.shape == (OUT, 2)
    restricted = GPTQWeight(QConfig(dtype="int4", scope="per_channel", symmetric=True, method="gptq",
                                    ext={"full_range": False})).quantize(weight, hessian)
    assert torch.equal(restricted.codes, gptq_quantize(weight, hessian, 4, True, 0, full_range=False).codes)


def test_ssz_refit_never_loses_to_minmax_per_row(layer):
    weight, _, _ = layer
    weight = weight.clone()
    weight[:, 0] *= 6  # an outlier column: minmax wastes int4 resolution on it
    for bits in (4, 8):
        minmax_scale = minmax_weight_qparams(weight, bits, True)[0]
        scale = ssz_scales(weight, bits)
        def row_mse(s):
            q = quantize_int_weight(weight, s, torch.zeros_like(s), bits, 0)
            return (q.dequantize() - weight).pow(2).mean(dim=1)
        assert (row_mse(scale) <= row_mse(minmax_scale) + 1e-12).all()
        assert row_mse(scale).mean() < 0.95 * row_mse(minmax_scale).mean() or bits == 8
    one_step = ssz_scales(weight, 4, steps=1)
    assert not torch.equal(one_step, ssz_scales(weight, 4))


def test_ssz_and_minmax_quantizers_are_data_free(layer):
    weight, _, _ = layer
    ssz = SSZWeight(QConfig(dtype="int4", scope="per_channel", symmetric=True, method="ssz", ext={"step": 10}))
    assert not ssz.needs_data
    quantized = ssz.quantize(weight)
    assert torch.equal(quantized.scale[:, 0], ssz_scales(weight, 4, steps=10))
    grouped = MinMaxIntWeight(QConfig(dtype="int8", scope="per_group", symmetric=False, method="minmax", ext={"group_size": 32}))
    assert grouped.quantize(weight).scale.shape == (OUT, IN // 32)


@pytest.mark.parametrize("group_size", [0, 32, 8], ids=["per_channel", "per_group32", "per_group8"])
def test_gptq_inner_steps_only_reorder_the_arithmetic(layer, group_size, monkeypatch):
    """Two-level GPTQ (rank-1 updates inside small steps, one product per step) gives the codes of plain
    column-by-column updates, also when groups start inside a step (8 columns: two groups per 16-column step)."""
    from modelslim_core.quant import gptq

    weight, _, hessian = layer
    fast = gptq_quantize(weight, hessian, 4, False, group_size)
    monkeypatch.setattr(gptq, "SUB_BLOCK", 1)  # every column's error spreads at once: the textbook loop
    plain = gptq_quantize(weight, hessian, 4, False, group_size)
    assert torch.equal(fast.codes, plain.codes)
    assert torch.allclose(fast.scale, plain.scale, rtol=1e-5)


@pytest.mark.parametrize("group_size", [0, 32], ids=["per_channel", "per_group32"])
def test_linears_sharing_a_hessian_solved_together_get_their_own_results(layer, group_size):
    """Stacking q/k/v rows into one GPTQ solve is exact: each linear's codes and scales are those of its
    own solve."""
    weight, _, hessian = layer
    config = QConfig(dtype="int4", scope="per_group" if group_size else "per_channel", symmetric=False, method="gptq",
                     ext={"group_size": group_size} if group_size else {})
    quantizer = GPTQWeight(config)
    parts = [weight, weight[:16] * 0.5, weight.flip(0)]
    together = quantizer.quantize_together(parts, hessian, ["q", "k", "v"])
    for part, joint in zip(parts, together, strict=True):
        alone = quantizer.quantize(part, hessian)
        assert torch.equal(joint.codes, alone.codes) and torch.allclose(joint.scale, alone.scale, rtol=1e-6)
        assert joint.shape == tuple(part.shape) and joint.group_size == group_size


@pytest.mark.parametrize("width", [100, 1024, 1030])
def test_gram_of_wide_inputs_mirrors_the_upper_blocks(width):
    from modelslim_core.quant.gptq import gram

    rows = torch.randn(300, width)
    expected = rows.T.double() @ rows.double()
    result = gram(rows)
    assert torch.allclose(result.double(), expected, rtol=1e-4, atol=1e-3)
    if width >= 1024:  # the blocks below the diagonal are exact copies of those above it
        quarter = width // 4
        assert torch.equal(result[quarter:, :quarter], result[:quarter, quarter:].T)


@pytest.mark.parametrize("width", [511, 512, 576, 1536])
def test_blocked_gram_is_bit_identical_to_the_full_product(width):
    """The split only chooses which entries are multiplied: each is the same dot product over every row, so
    Hessians (and checkpoints) are unchanged by where GRAM_SPLIT_FROM lies."""
    from modelslim_core.quant.gptq import gram

    rows = torch.randn(2000, width, generator=torch.Generator().manual_seed(width))
    assert torch.equal(gram(rows), rows.T @ rows)


def test_buffered_streams_sum_every_row_once_and_share_equal_inputs(monkeypatch):
    """q/k/v reading one tensor join one stream (one product); rows are buffered across samples and the sum is
    exact however the buffer is flushed."""
    from modelslim_core.quant import gptq

    samples = [torch.randn(3, 40, 16) for _ in range(5)]
    expected = sum(s.reshape(-1, 16).T.double() @ s.reshape(-1, 16).double() for s in samples)
    for cap in (1, 2**30):  # flush after every sample, or only when asked
        monkeypatch.setattr(gptq, "GRAM_BUFFER_BYTES", cap)
        cache = GramCache()
        q, k, alone = (HessianAccumulator(16, torch.device("cpu"), cache) for _ in range(3))
        for sample in samples:
            q.update(sample, key=sample)
            k.update(sample.clone(), key=sample)  # equal values, same raw input: joins q's stream
            alone.update(sample)  # no key: its own stream
        assert q._stream is k._stream and alone._stream is not q._stream and len(cache._streams) == 1
        for acc in (q, k, alone):
            assert acc.tokens == 5 * 3 * 40
            assert torch.allclose(acc.sum.double(), expected, rtol=1e-5, atol=1e-3)


def test_calibrating_linears_reading_one_input_are_solved_together(layer):
    """q/k/v-like linears fed the same tensor share one input stream and get one stacked GPTQ solve; a linear
    fed another tensor is left to its own `finish`. Each result equals the one-linear solve."""
    from modelslim_core.protocol.qconfig import LinearQConfig
    from modelslim_core.quant.quantized_linear import LinearQuantizer, solve_shared_hessians

    weight, x, _ = layer
    quantizer = LinearQuantizer(LinearQConfig.model_validate(
        {"weight": {"dtype": "int4", "scope": "per_channel", "symmetric": True, "method": "gptq"}}))
    cache = GramCache()
    linears = [torch.nn.Linear(IN, OUT, bias=False) for _ in range(4)]
    for linear, scale in zip(linears, (1.0, 0.5, 2.0, 1.0)):
        linear.weight.data = weight * scale
    calibrating = [quantizer.calibrating(f"l{i}", linear, cache) for i, linear in enumerate(linears)]
    for module in calibrating[:3]:
        module(x)  # one tensor, three readers
    calibrating[3](x.clone())  # equal values, but another input
    shared = calibrating[0].hessian.hessian()
    solved = solve_shared_hessians(calibrating)
    assert [q is not None for q in solved] == [True, True, True, False]
    for module, joint in zip(calibrating[:3], solved):
        alone = quantizer.weight.quantize(module.weight, shared)
        assert torch.equal(joint.codes, alone.codes)
    with pytest.raises(RuntimeError, match="already handed to GPTQ"):  # the solve consumed the shared sum in place
        calibrating[1].hessian.hessian()
