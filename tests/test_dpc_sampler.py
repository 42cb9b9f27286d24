import random

import pytest
import torch

from trainers.dpc.sampler import HardNegativeSampler, index_by_class

N = 10


def make_sampler(topk=8, per_class=3, seed=0, num_classes=N):
    labels = [c for c in range(num_classes) for _ in range(per_class)]
    return HardNegativeSampler(index_by_class(labels, num_classes), num_classes, topk, rng=random.Random(seed)), labels


def ranked_scores(rankings):
    """Scores whose descending order per row is the given class ranking."""
    scores = torch.zeros(len(rankings), N)
    for row, ranking in enumerate(rankings):
        for position, c in enumerate(ranking):
            scores[row, c] = N - position
    return scores


def test_hard_negatives_are_the_top_ranked_other_classes():
    sampler, item_labels = make_sampler(topk=4)
    scores = ranked_scores([[3, 7, 1, 5, 2, 0, 4, 6, 8, 9]])
    out = sampler.sample(scores, torch.tensor([1]))
    assert out.anchor_rows == [0]
    assert out.neg_labels == [3, 7, 5]  # top-4 = 3,7,1,5 minus the true class 1
    assert [item_labels[i] for i in out.neg_items] == out.neg_labels


@pytest.mark.parametrize("seed", range(20))
def test_batch_invariants_hold_for_random_scores(seed):
    torch.manual_seed(seed)
    b, k = 4, 8
    sampler, item_labels = make_sampler(topk=k, seed=seed)
    labels = torch.randint(0, N, (b,))
    out = sampler.sample(torch.randn(b, N), labels)
    pair_labels = [int(labels[r]) for r in out.anchor_rows] + out.neg_labels
    assert len(pair_labels) == len(set(pair_labels))  # no class twice in a mini-batch
    assert out.size <= b * k
    anchors = {int(labels[r]) for r in out.anchor_rows}
    assert anchors == set(labels.tolist())  # each distinct anchor class is kept once
    assert not anchors & set(out.neg_labels)  # a true class is never a negative
    assert all(item_labels[i] == c for i, c in zip(out.neg_items, out.neg_labels))


def test_duplicate_anchor_classes_are_kept_once():
    sampler, _ = make_sampler(topk=3)
    out = sampler.sample(torch.randn(3, N), torch.tensor([2, 2, 5]))
    assert out.anchor_rows == [0, 2]


def test_classes_already_in_the_batch_are_skipped_and_filled_randomly():
    sampler, _ = make_sampler(topk=3)
    # anchor 0 (class 0) ranks classes 1 and 2 first, but both are anchors of this batch
    scores = ranked_scores([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]] * 3)
    out = sampler.sample(scores, torch.tensor([0, 1, 2]))
    first = out.neg_labels[:2]
    assert len(first) == 2 and not set(first) & {0, 1, 2}


def test_random_fill_reaches_every_free_class_including_first_and_last():
    """The reference drew randint(1, n-2), which never picks class 0 or n-1; ours can."""
    seen = set()
    for seed in range(300):
        sampler, _ = make_sampler(topk=3, seed=seed)
        scores = ranked_scores([[5, 6, 7, 0, 1, 2, 3, 4, 8, 9]] * 3)
        out = sampler.sample(scores, torch.tensor([5, 6, 7]))
        seen.update(out.neg_labels[:2])  # anchor 5's top-3 are all in the batch: both are fills
    assert seen == set(range(N)) - {5, 6, 7}


def test_negatives_come_only_from_the_allowed_items():
    # items 0..5 are allowed; class 3 has only item 4
    by_class = {0: [0], 1: [1, 2], 2: [3], 3: [4], 4: [5]}
    sampler = HardNegativeSampler(by_class, 5, topk=5, rng=random.Random(0))
    for seed in range(10):
        scores = torch.randn(2, 5, generator=torch.Generator().manual_seed(seed))
        out = sampler.sample(scores, torch.tensor([0, 1]))
        for item, c in zip(out.neg_items, out.neg_labels):
            assert item in by_class[c]


def test_deterministic_for_a_seed():
    scores, labels = torch.randn(4, N), torch.tensor([0, 3, 5, 9])
    a = make_sampler(seed=7)[0].sample(scores, labels)
    b = make_sampler(seed=7)[0].sample(scores, labels)
    assert a == b


def test_bad_configuration_is_rejected_with_a_hint():
    with pytest.raises(ValueError, match="TOPK=11 must be between 1 and the number of base classes \\(10\\)"):
        make_sampler(topk=11)
    with pytest.raises(ValueError, match="no training image.*3 \\(truck\\)"):
        HardNegativeSampler({0: [0], 1: [1], 2: [2], 3: []}, 4, topk=2,
                            classnames=["a", "b", "c", "truck"])
    with pytest.raises(ValueError, match="outside"):
        index_by_class([0, 4], 3)
    sampler, _ = make_sampler()
    with pytest.raises(ValueError, match="scores must be"):
        sampler.sample(torch.randn(2, 5), torch.tensor([0, 1]))
