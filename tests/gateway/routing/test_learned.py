"""What is learned of a backend is about one (registration, model), with a lifetime."""

from __future__ import annotations

from gateway.routing.learned import LACKING_SECONDS, REFUSES_OPTION_SECONDS, Learned, Trait
from gateway.routing.outlier import OutlierPolicy
from gateway.routing.policy import Backend

# One server serving two models, and a second server of model A.
A_ON_ONE = Backend("one", "A", "http://one")
B_ON_ONE = Backend("one", "B", "http://one")
A_ON_TWO = Backend("two", "A", "http://two")


def learned_at(now: list[float]) -> Learned:
    return Learned(OutlierPolicy(consecutive=3, base_seconds=30, max_percent=50), lambda: now[0])


def test_faults_of_one_model_do_not_eject_the_server_for_another() -> None:
    now = [0.0]
    learned = learned_at(now)
    peers_a = (A_ON_ONE, A_ON_TWO, Backend("three", "A", "http://three"), Backend("4", "A", "x"))
    ejected_after = [learned.faulted(A_ON_ONE, peers_a) for _ in range(3)]
    assert ejected_after[:2] == [None, None] and ejected_after[2] == 30
    assert learned.ejected_for("A") == {"one"}
    # B's only server is the same registration: it stays in routing for B.
    assert learned.ejected_for("B") == frozenset()
    assert learned.faulted(B_ON_ONE, (B_ON_ONE,)) is None
    now[0] = 31
    assert learned.ejected_for("A") == frozenset()


def test_an_answer_for_one_model_does_not_clear_anothers_faults() -> None:
    now = [0.0]
    learned = learned_at(now)
    peers = (A_ON_ONE, A_ON_TWO, Backend("3", "A", "x"), Backend("4", "A", "y"))
    learned.faulted(A_ON_ONE, peers)
    learned.faulted(A_ON_ONE, peers)
    learned.answered(B_ON_ONE.key)  # model B answered on the same server
    assert learned.faulted(A_ON_ONE, peers) == 30


def test_a_lacking_path_is_per_model_and_forgotten() -> None:
    now = [0.0]
    learned = learned_at(now)
    assert learned.lacking("A", "/v1/rerank") == frozenset()
    learned.learn(A_ON_ONE.key, Trait.LACKS_PATH, "/v1/rerank")
    assert learned.lacking("A", "/v1/rerank") == {"one"}
    assert learned.lacking("B", "/v1/rerank") == frozenset()
    assert learned.lacking("A", "/v1/embeddings") == frozenset()
    now[0] = LACKING_SECONDS + 1
    assert learned.lacking("A", "/v1/rerank") == frozenset()


def test_a_refused_option_is_per_model_and_forgotten() -> None:
    now = [0.0]
    learned = learned_at(now)
    learned.learn(A_ON_ONE.key, Trait.REFUSES_USAGE_OPTION)
    assert learned.has(A_ON_ONE.key, Trait.REFUSES_USAGE_OPTION)
    assert not learned.has(B_ON_ONE.key, Trait.REFUSES_USAGE_OPTION)
    now[0] = REFUSES_OPTION_SECONDS + 1
    assert not learned.has(A_ON_ONE.key, Trait.REFUSES_USAGE_OPTION)
