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
    assert out.num_anchors == 1
    assert out.neg_labels == [3, 7, 5]  # top-4 = 3,7,1,5 minus the true class 1
    assert [item_labels[i] for i in out.neg_items] == out.neg_labels


@pytest.mark.parametrize("seed", range(20))
def test_batch_invariants_hold_for_random_scores(seed):
    torch.manual_seed(seed)
    b, k = 4, 8
    sampler, item_labels = make_sampler(topk=k, seed=seed)
    labels = torch.randint(0, N, (b,))
    out = sampler.sample(torch.randn(b, N), labels)
    assert out.num_anchors == b  # every anchor is kept, repeated classes included
    assert len(out.neg_labels) == len(set(out.neg_labels))  # no negative class twice
    assert out.size == b + len(out.neg_labels) <= b * k
    assert not set(labels.tolist()) & set(out.neg_labels)  # no class of the batch is a negative
    assert all(item_labels[i] == c for i, c in zip(out.neg_items, out.neg_labels))


def test_every_anchor_is_kept_and_its_class_is_never_a_negative():
    """The release keeps every anchor; two anchors of class 2 are positives of each other in the loss."""
    sampler, _ = make_sampler(topk=4)
    ranking = [2, 5, 1, 3, 4, 6, 7, 8, 9, 0]  # both classes of the batch rank first for every anchor
    out = sampler.sample(ranked_scores([ranking] * 3), torch.tensor([2, 2, 5]))
    assert out.num_anchors == 3
    assert out.neg_labels[:2] == [1, 3]  # anchor 0: top-4 is 2, 5, 1, 3; 2 and 5 are in the batch
    # anchor 1 finds nothing new in its top-4 and gets 2 random free classes, anchor 2 gets 4 and a random one
    assert len(out.neg_labels) == 2 + 2 + 2
    assert not {2, 5} & set(out.neg_labels) and len(set(out.neg_labels)) == 6


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


def test_random_negatives_ignore_the_scores_and_cover_all_other_classes():
    labels = [c for c in range(N) for _ in range(3)]
    sampler = HardNegativeSampler(index_by_class(labels, N), N, topk=4, rng=random.Random(0), choice="random")
    scores = ranked_scores([[3, 7, 1, 5, 2, 0, 4, 6, 8, 9]])
    seen = set()
    for _ in range(200):
        out = sampler.sample(scores, torch.tensor([1]))
        assert len(out.neg_labels) == 3 and 1 not in out.neg_labels and len(set(out.neg_labels)) == 3
        assert [labels[i] for i in out.neg_items] == out.neg_labels
        seen.update(out.neg_labels)
    assert seen == set(range(N)) - {1}  # not the top-ranked 3, 7, 5 only
    again = HardNegativeSampler(index_by_class(labels, N), N, topk=4, rng=random.Random(0), choice="random")
    first = HardNegativeSampler(index_by_class(labels, N), N, topk=4, rng=random.Random(0), choice="random")
    assert again.sample(scores, torch.tensor([1])).neg_items == first.sample(scores, torch.tensor([1])).neg_items
    with pytest.raises(ValueError, match="DPC.NEGATIVES"):
        HardNegativeSampler(index_by_class(labels, N), N, topk=4, choice="easy")
