"""RTN int-k on hand-computed groups, and every quantizer's rounding boundaries checked against its own codes."""
import pytest
import torch

from qru.quant.bnb import quantize_4bit, quantize_int8, uniform_boundary
from qru.quant.rtn import quantize_rtn

ROW = torch.tensor([[0.0, 0.1, -0.35, 0.7]])


def test_symmetric_3_bit_by_hand():
    q = quantize_rtn(ROW, 3, group_size=0, symmetric=True)  # q_max 3, s = 0.7 / 3
    s = 0.7 / 3
    assert q.codes.tolist() == [[0, 0, -2, 3]]  # -1.5 rounds half to even
    assert torch.allclose(q.dequant, torch.tensor([[0.0, 0.0, -2 * s, 0.7]]))
    assert torch.allclose(q.step, torch.full((1, 4), s))
    assert torch.allclose(q.boundary, torch.tensor([[0.5 * s, 0.5 * s - 0.1, 0.0, 0.5 * s]]), atol=1e-7)


def test_asymmetric_2_bit_by_hand():
    q = quantize_rtn(ROW, 2, group_size=0, symmetric=False)  # lo -0.35, hi 0.7: s 0.35, zero point 1
    assert q.codes.tolist() == [[1, 1, 0, 3]]
    assert torch.allclose(q.dequant, torch.tensor([[0.0, 0.0, -0.35, 0.7]]))
    assert torch.allclose(q.boundary, torch.tensor([[0.175, 0.075, 0.175, 0.175]]), atol=1e-7)


def test_groups_have_their_own_scales_and_bad_arguments_are_named():
    w = torch.cat([torch.full((1, 32), 0.1), torch.full((1, 32), 1.0)], dim=1)
    q = quantize_rtn(w, 4, group_size=32)
    assert q.step[0, 0] == pytest.approx(0.1 / 7) and q.step[0, 40] == pytest.approx(1.0 / 7)
    assert torch.equal(q.dequant, w)
    for kwargs, needle in (({"bits": 9}, "9"), ({"bits": 4, "group_size": 48}, "48"),
                           ({"bits": 1}, "1")):
        with pytest.raises(ValueError, match=needle):
            quantize_rtn(torch.zeros(2, 64), **kwargs)
    ragged = torch.cat([torch.full((1, 64), 0.7), torch.tensor([[0.2] * 31 + [-0.1]])], dim=1)  # 96 = 64 + 32
    q = quantize_rtn(ragged, 4, group_size=64)  # the last group is shorter, with its own scale
    assert q.codes.shape == (1, 96) and q.step[0, 0] == pytest.approx(0.1) and q.step[0, 70] == pytest.approx(0.2 / 7)
    assert q.codes[0, 64:].tolist() == [7] * 31 + [-4]  # -0.1 / (0.2/7) = -3.5: half to even gives -4
    zero = quantize_rtn(torch.zeros(2, 64), 4, group_size=32, symmetric=False)
    assert torch.equal(zero.dequant, torch.zeros(2, 64))


def test_uniform_boundary_at_the_ends_of_the_range():
    t = torch.tensor([-3.2, -3.0, -2.6, 0.2, 2.9, 3.7])
    assert torch.allclose(uniform_boundary(t, -3, 3), torch.tensor([0.7, 0.5, 0.1, 0.3, 0.4, 1.2]), atol=1e-6)


def _flip_check(quantize, w, index, boundary, margin):
    """Moving one weight by (1 - margin) of its boundary distance keeps its code both ways; by (1 + margin) flips it
    one way (the group's scale is untouched: extreme weights are not moved)."""
    base = quantize(w).codes.flatten()[index]
    kept, flipped = [], []
    for factor, out in ((1 - margin, kept), (1 + margin, flipped)):
        for sign in (1, -1):
            moved = w.clone().flatten()
            moved[index] += sign * factor * boundary
            out.append(quantize(moved.reshape(w.shape)).codes.flatten()[index] != base)
    return not any(kept) and any(flipped)


@pytest.mark.parametrize("name", ["rtn-sym-4", "rtn-asym-3", "fp4", "nf4", "int8"])
def test_boundaries_are_where_the_quantizer_changes_code(name):
    torch.manual_seed(0)
    w = torch.randn(4, 64) * 0.02
    quantize = {"rtn-sym-4": lambda x: quantize_rtn(x, 4, 32), "rtn-asym-3": lambda x: quantize_rtn(x, 3, 32, False),
                "fp4": lambda x: quantize_4bit(x, "fp4"), "nf4": lambda x: quantize_4bit(x, "nf4"),
                "int8": quantize_int8}[name]
    q = quantize(w)
    groups = w.reshape(-1, 32)  # RTN groups of 32; 4-bit blocks and int8 rows (64) are unions of them
    extreme = (groups.abs() >= groups.abs().amax(1, keepdim=True) * 0.5) | (groups == groups.amin(1, keepdim=True))
    candidates = [i for i in range(w.numel()) if not extreme.flatten()[i] and q.boundary.flatten()[i] > 1e-4]
    margin = 0.5 if name == "int8" else 0.02  # int8 rounds the weight to float16 first (spacing ~1.5e-5 here)
    checked = candidates[::5][:12]
    assert len(checked) >= 6
    assert all(_flip_check(quantize, w, i, float(q.boundary.flatten()[i]), margin) for i in checked)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [0, 32, 64, 128])
def test_rtn_matches_torchao_affine_quantization(bits, symmetric, group_size):
    """torchao's quant primitives (an independent implementation of the same textbook grid) give the same codes and
    values: symmetric with the restricted range -q_max..q_max, asymmetric min/max with an integer zero point."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prim = pytest.importorskip("torchao.quantization.quant_primitives")
    torch.manual_seed(bits * 100 + group_size + symmetric)
    w = torch.randn(6, 256) * 0.02
    w[0, :40] = 0.0  # an all-zero group where g = 32
    w[1] = w[1].abs()  # a row without negatives: its zero point is 0
    q_min, q_max = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    mapping = prim.MappingType.SYMMETRIC if symmetric else prim.MappingType.ASYMMETRIC
    block = (1, group_size or w.shape[1])
    scale, zero = prim.choose_qparams_affine(w, mapping, block, torch.int32, q_min, q_max, eps=1e-30,
                                             scale_dtype=torch.float32, zero_point_dtype=torch.int32)
    codes = prim.quantize_affine(w, block, scale, zero, torch.int32, q_min, q_max)
    values = prim.dequantize_affine(codes, block, scale, zero, torch.int32, q_min, q_max,
                                    output_dtype=torch.float32)
    ours = quantize_rtn(w, bits, group_size, symmetric)
    assert torch.equal(ours.codes, codes.long())
    assert torch.allclose(ours.dequant, values, atol=1e-9)
