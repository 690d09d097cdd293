"""MDLM and ProSeCo losses (Algorithm 1), pinned against hand-computed values."""

import math

import pytest
import torch

from proseco import LossConfig, mdm_loss, proseco_loss
from tests.conftest import MixModel, TableModel

MASK = 3
NEG = 0.0  # the table's mask column; the loss must ignore it (mask logit -> -inf)


def table_model() -> TableModel:
    # Rows: logits produced at a position whose input token is 0, 1, 2, MASK. Columns: 0, 1, 2, MASK.
    table = torch.tensor(
        [
            [2.0, 0.0, 0.0, 5.0],  # input 0: the big mask logit must be ignored
            [0.0, 1.0, 0.0, NEG],  # input 1
            [0.0, 0.0, 1.0, NEG],  # input 2
            [0.0, 1.5, 0.0, 9.0],  # input MASK: argmax (mask excluded) is 1 -> a wrong proposal
        ]
    )
    return TableModel(table)


# x0 = [0, 1]; xt = [MASK, 1]; t = 0.5 -> w = 2 (log-linear); N = 2 loss positions.
X0 = torch.tensor([[0, 1]])
XT = torch.tensor([[MASK, 1]])
T = torch.tensor([0.5])

# Hand values (mask column excluded from every softmax):
NLL1_POS0 = math.log(1 + math.exp(1.5) + 1) - 0.0  # pass 1 at the masked position, target 0
# Proposal y = [1, 1] (argmax of [0, 1.5, 0] is 1; position 1 is unmasked and carries over).
NLL2_POS0 = math.log(1 + math.e + 1) - 0.0  # pass 2 sees token 1 at pos 0, target 0
NLL2_POS1 = math.log(1 + math.e + 1) - 1.0  # pass 2 sees token 1 at pos 1, target 1
W = 2.0


def run(**kwargs):
    return proseco_loss(table_model(), X0, mask_id=MASK, t=T, xt=XT, **kwargs)


def test_proseco_loss_equals_hand_computed_value():
    out = run()
    mdm = W * NLL1_POS0 / 2
    corr = W * (NLL2_POS0 + NLL2_POS1) / 2
    assert float(out.mdm_loss) == pytest.approx(mdm, rel=1e-6)
    assert float(out.corrector_loss) == pytest.approx(corr, rel=1e-6)
    assert float(out.loss.detach()) == pytest.approx(mdm + corr, rel=1e-6)
    assert out.y.tolist() == [[1, 1]]
    assert float(out.proposal_error_rate) == pytest.approx(0.5)
    assert out.mdm_terms[0, 1] == 0  # unmasked positions carry no MDLM loss


def test_loss_weights_mix_the_terms():
    out = run(mdm_weight=0.5, sc_weight=2.0)
    expected = (0.5 * W * NLL1_POS0 + 2.0 * W * (NLL2_POS0 + NLL2_POS1)) / 2
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-6)


def test_sc_weight_zero_is_the_hand_computed_mdlm_loss_in_one_pass():
    calls = []
    model = table_model()
    model.register_forward_hook(lambda *_: calls.append(1))
    mdlm = W * NLL1_POS0 / 2  # the masked position only; N = 2 loss positions
    out = proseco_loss(model, X0, mask_id=MASK, t=T, xt=XT, sc_weight=0.0, mdm_weight=0.5)
    assert len(calls) == 1  # no corrector pass
    assert float(out.loss.detach()) == pytest.approx(0.5 * mdlm, rel=1e-6)  # weighted
    assert float(out.mdm_loss) == pytest.approx(mdlm, rel=1e-6)  # the term itself
    assert out.y is None and out.corrector_terms is None and float(out.corrector_loss) == 0.0
    assert set(out.terms) == {"mdlm_nelbo"} and out.proposal_error_rate is None
    # mdm_loss is that same number, and so is the MDLM part of the full ProSeCo loss
    assert float(mdm_loss(model, X0, mask_id=MASK, t=T, xt=XT).loss.detach()) == pytest.approx(mdlm)
    full = proseco_loss(model, X0, mask_id=MASK, t=T, xt=XT)
    assert float(full.mdm_loss) == pytest.approx(mdlm, rel=1e-6)
    assert len(calls) == 4  # mdm_loss: one pass; the full loss: two


def test_mdm_loss_hand_value():
    out = mdm_loss(table_model(), X0, mask_id=MASK, t=T, xt=XT)
    assert float(out.loss.detach()) == pytest.approx(W * NLL1_POS0 / 2, rel=1e-6)


def test_errors_upweighted_uses_probability_where_proposal_is_right():
    out = run(errors_upweighted=True)
    p_right = math.exp(-NLL2_POS1)  # y == x0 at position 1 -> -p instead of -log p
    corr = W * (NLL2_POS0 - p_right) / 2
    assert float(out.corrector_loss) == pytest.approx(corr, rel=1e-6)


def test_unweighted_corrector_term_drops_w():
    out = run(weighted=False)
    assert float(out.corrector_loss) == pytest.approx((NLL2_POS0 + NLL2_POS1) / 2, rel=1e-6)
    assert float(out.mdm_loss) == pytest.approx(W * NLL1_POS0 / 2, rel=1e-6)


def test_all_positions_input_uses_raw_argmax_at_unmasked_positions():
    # Make the raw network argmax at an unmasked token 1 be token 2 (no carry-over in this mode).
    model = table_model()
    with torch.no_grad():
        model.table[1] = torch.tensor([0.0, 0.0, 1.0, 0.0])
    masked_only = proseco_loss(model, X0, mask_id=MASK, t=T, xt=XT)
    all_pos = proseco_loss(model, X0, mask_id=MASK, t=T, xt=XT, corrector_input="all_positions")
    assert masked_only.y.tolist() == [[1, 1]]
    assert all_pos.y.tolist() == [[1, 2]]
    # pass 2, position 1 sees token 2 -> row [0, 0, 1], target 1: -log p = log(2 + e)
    nll_pos1 = math.log(2 + math.e)
    # pass 2, position 0 sees token 1 -> row [0, 0, 1] (edited), target 0: -log p = log(2 + e)
    nll_pos0 = math.log(2 + math.e)
    assert float(all_pos.corrector_loss) == pytest.approx(W * (nll_pos0 + nll_pos1) / 2, rel=1e-6)


def test_sampled_proposal_is_reproducible_and_differs_from_argmax():
    model = MixModel(vocab_size=8, length=12)
    x0 = torch.randint(0, 7, (16, 12), generator=torch.Generator().manual_seed(2))
    t = torch.ones(16)
    xt = torch.full_like(x0, 7)
    a = proseco_loss(
        model,
        x0,
        mask_id=7,
        t=t,
        xt=xt,
        proposal="sample",
        generator=torch.Generator().manual_seed(5),
    )
    b = proseco_loss(
        model,
        x0,
        mask_id=7,
        t=t,
        xt=xt,
        proposal="sample",
        generator=torch.Generator().manual_seed(5),
    )
    c = proseco_loss(model, x0, mask_id=7, t=t, xt=xt)
    assert torch.equal(a.y, b.y) and torch.equal(a.loss, b.loss)
    assert not torch.equal(a.y, c.y)
    assert bool((a.y != 7).all())  # the mask token is never proposed


def test_start_step_delays_the_corrector_term():
    before = run(start_step=10, step=9)
    after = run(start_step=10, step=10)
    assert before.y is None and float(before.corrector_loss) == 0.0
    assert float(before.loss.detach()) == pytest.approx(W * NLL1_POS0 / 2, rel=1e-6)
    assert float(after.corrector_loss) > 0


def test_loss_mask_excludes_positions_and_sets_the_normaliser():
    x0 = torch.tensor([[0, 1, 2]])
    xt = torch.tensor([[MASK, 1, MASK]])
    mask = torch.tensor([[True, True, False]])
    out = proseco_loss(table_model(), x0, mask_id=MASK, t=T, xt=xt, loss_mask=mask)
    ref = run()
    assert float(out.num_tokens) == 2
    assert float(out.loss.detach()) == pytest.approx(float(ref.loss.detach()), rel=1e-6)


def test_no_gradient_flows_through_the_corrector_input():
    """Gradient = grad of L_mdm(pass 1) + grad of L_sc on a constant y: nothing through y."""
    model = MixModel(vocab_size=8, length=12)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randint(0, 7, (3, 12), generator=g)
    t = torch.tensor([0.3, 0.6, 0.9])
    xt = torch.where(torch.rand(3, 12, generator=g) < t[:, None], 7, x0)
    out = proseco_loss(model, x0, mask_id=7, t=t, xt=xt)
    out.loss.backward()
    full = [p.grad.clone() for p in model.parameters()]
    assert out.y.grad_fn is None and not out.y.requires_grad

    model.zero_grad()
    mdm = mdm_loss(model, x0, mask_id=7, t=t, xt=xt)
    y = out.y.clone()
    # L_sc with y as an input that does not depend on the parameters
    logp = torch.log_softmax(model(y).float() + torch.tensor([0.0] * 7 + [-float("inf")]), -1)
    sc = (-logp.gather(-1, x0[..., None]).squeeze(-1) / t[:, None]).sum() / x0.numel()
    (mdm.loss + sc).backward()
    for a, b in zip(full, model.parameters()):
        torch.testing.assert_close(a, b.grad)


def test_two_backward_mode_gives_the_same_gradients():
    model = MixModel(vocab_size=8, length=12)
    g = torch.Generator().manual_seed(4)
    x0 = torch.randint(0, 7, (3, 12), generator=g)
    t = torch.tensor([0.2, 0.5, 0.8])
    xt = torch.where(torch.rand(3, 12, generator=g) < t[:, None], 7, x0)
    one = proseco_loss(model, x0, mask_id=7, t=t, xt=xt)
    one.loss.backward()
    grads_one = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    two = proseco_loss(model, x0, mask_id=7, t=t, xt=xt, backward_fn=lambda x: x.backward())
    assert not two.loss.requires_grad
    torch.testing.assert_close(two.loss, one.loss.detach())
    for a, p in zip(grads_one, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


def test_draws_t_and_xt_when_not_given_and_respects_noise_mask():
    model = MixModel(vocab_size=8, length=12)
    x0 = torch.randint(0, 7, (64, 12), generator=torch.Generator().manual_seed(0))
    noise = torch.ones_like(x0, dtype=torch.bool)
    noise[:, :4] = False  # a "prompt" that is never noised
    out = proseco_loss(
        model, x0, mask_id=7, loss_mask=noise, generator=torch.Generator().manual_seed(1)
    )
    assert out.t.shape == (64,) and bool((out.t >= 1e-3).all())
    assert torch.equal(out.xt[:, :4], x0[:, :4])
    assert out.corrector_terms[:, :4].abs().sum() == 0
    assert out.mdm_terms[:, :4].abs().sum() == 0
    assert bool((out.xt == 7).any())


# ---- bad input -----------------------------------------------------------------------------


def test_token_ids_outside_vocabulary():
    with pytest.raises(ValueError, match="vocabulary"):
        proseco_loss(table_model(), torch.tensor([[0, 4]]), mask_id=MASK, t=T)
    with pytest.raises(ValueError, match="vocabulary"):
        proseco_loss(table_model(), torch.tensor([[0, -1]]), mask_id=MASK, t=T)


def test_mask_id_outside_vocabulary():
    with pytest.raises(ValueError, match="mask_id 4 is outside"):
        proseco_loss(table_model(), X0, mask_id=4, t=T)


def test_mask_id_in_clean_data():
    with pytest.raises(ValueError, match="must not contain the mask token"):
        proseco_loss(table_model(), torch.tensor([[0, MASK]]), mask_id=MASK, t=T)


def test_mismatched_shapes():
    with pytest.raises(ValueError, match="xt has shape"):
        proseco_loss(table_model(), X0, mask_id=MASK, t=T, xt=torch.tensor([[MASK, 1, 1]]))
    with pytest.raises(ValueError, match="loss_mask"):
        proseco_loss(
            table_model(), X0, mask_id=MASK, t=T, loss_mask=torch.ones(1, 3, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match=r"t must have shape \[B\]"):
        proseco_loss(table_model(), X0, mask_id=MASK, t=torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        proseco_loss(table_model(), torch.tensor([0, 1]), mask_id=MASK)


@pytest.mark.parametrize("bad_t", [0.0, -0.1, 1.5])
def test_t_outside_unit_interval(bad_t):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        proseco_loss(table_model(), X0, mask_id=MASK, t=torch.tensor([bad_t]))


def test_xt_inconsistent_with_x0():
    with pytest.raises(ValueError, match="xt differs from x0"):
        proseco_loss(table_model(), X0, mask_id=MASK, t=T, xt=torch.tensor([[2, 1]]))


def test_unknown_option_values():
    with pytest.raises(ValueError, match="proposal"):
        LossConfig(proposal="greedy")
    with pytest.raises(ValueError, match="corrector_input"):
        LossConfig(corrector_input="everything")
    with pytest.raises(TypeError):
        proseco_loss(table_model(), X0, mask_id=MASK, t=T, not_an_option=1)
