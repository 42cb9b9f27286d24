import math

import torch

import torch.nn.functional as F

from trainers.dpc.loss import filter_text_features, symmetric_infonce


def test_feature_filtering_is_the_selection_matrix():
    text = torch.randn(5, 3)
    labels = torch.tensor([4, 0, 2])
    q = torch.nn.functional.one_hot(labels, 5).float()
    normalised = text / text.norm(dim=-1, keepdim=True)
    assert torch.allclose(filter_text_features(text, labels), q @ normalised)


def test_symmetric_infonce_matches_a_hand_computation():
    image = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # normalised: (0.6, 0.8), (1, 0)
    text = torch.tensor([[0.0, 2.0], [5.0, 0.0], [1.0, 1.0]])  # normalised: (0, 1), (1, 0), (.707, .707)
    labels = torch.tensor([2, 1])  # image 0 <-> class 2, image 1 <-> class 1
    scale = 2.0
    s = 1 / math.sqrt(2)
    cos = [[0.6 * s + 0.8 * s, 0.6], [s, 1.0]]  # rows: images, columns: pairs' classes (2, 1)
    logits = [[scale * c for c in row] for row in cos]

    def ce(rows):
        return sum(-rows[i][i] + math.log(sum(math.exp(v) for v in rows[i])) for i in range(2)) / 2

    columns = [[logits[j][i] for j in range(2)] for i in range(2)]
    expected = (ce(logits) + ce(columns)) / 2
    loss = symmetric_infonce(image, text, labels, torch.tensor(math.log(scale)))
    assert abs(loss.item() - expected) < 1e-6


def test_loss_gradient_flows_to_text_features_only_through_selected_rows():
    image = torch.randn(3, 4)
    text = torch.randn(6, 4, requires_grad=True)
    symmetric_infonce(image, text, torch.tensor([5, 1, 3]), torch.tensor(2.0)).backward()
    touched = (text.grad.abs().sum(dim=1) > 0).nonzero().flatten().tolist()
    assert touched == [1, 3, 5]


def test_distinct_labels_give_the_release_loss_bit_for_bit():
    """The authors' loss: cross-entropy of both directions against arange(L), averaged."""
    torch.manual_seed(0)
    image, text, scale = torch.randn(6, 8), torch.randn(10, 8), torch.tensor(4.6)
    labels = torch.tensor([3, 0, 9, 4, 7, 1])
    img = image / image.norm(dim=-1, keepdim=True)
    txt = text / text.norm(dim=-1, keepdim=True)
    logits = scale.exp() * img @ txt[labels.tolist()].t()
    ids = torch.arange(6)
    expected = (F.cross_entropy(logits, ids) + F.cross_entropy(logits.t(), ids)) / 2
    assert torch.equal(symmetric_infonce(image, text, labels, scale), expected)


def multi_positive_loss(image, text, labels, scale):
    """Symmetric InfoNCE whose target is uniform over all pairs of the same class."""
    img = F.normalize(image, dim=-1)
    txt = F.normalize(text, dim=-1)[labels]
    logits = scale * img @ txt.t()
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def test_pairs_of_one_class_are_positives_of_each_other():
    """Anchors of one class kept together: the loss equals the multi-positive loss, value and gradient."""
    torch.manual_seed(1)
    labels = torch.tensor([2, 2, 5, 2, 0, 7])
    image = torch.randn(6, 8, requires_grad=True)
    text = torch.randn(9, 8, requires_grad=True)
    ours = symmetric_infonce(image, text, labels, torch.tensor(math.log(20.0)))
    ours_grads = torch.autograd.grad(ours, (image, text))
    reference = multi_positive_loss(image, text, labels, 20.0)
    reference_grads = torch.autograd.grad(reference, (image, text))
    assert torch.allclose(ours, reference, rtol=1e-6)
    for a, b in zip(ours_grads, reference_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_per_image_text_gives_each_pair_its_own_conditioned_row():
    """CoCoOp: text features [L, C, D]; pair j's text is its class under its own image's prompt."""
    torch.manual_seed(0)
    image = torch.randn(3, 4)
    text = torch.randn(3, 5, 4)
    labels = torch.tensor([4, 0, 4])
    rows = torch.stack([text[j, labels[j]] for j in range(3)])
    assert torch.equal(filter_text_features(text, labels), F.normalize(rows, dim=-1))
    scale = torch.tensor(math.log(10.0))
    logits = 10.0 * F.normalize(image, dim=-1) @ F.normalize(rows, dim=-1).t()
    expected = (F.cross_entropy(logits, torch.arange(3)) + F.cross_entropy(logits.t(), torch.arange(3))) / 2
    assert torch.allclose(symmetric_infonce(image, text, labels, scale), expected)
