import math

import torch

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
