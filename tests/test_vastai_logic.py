"""The pure parts of deploy/vastai: offer choice, instance state decisions, health verdicts."""

from __future__ import annotations

from deploy.vastai.lifecycle import Phase, assess, degraded_too_long, health_verdict, mapped_port, split_labelled
from deploy.vastai.offers import api_order, rank, rejection, search_query
from deploy.vastai.settings import OfferCriteria
from tests.vast_standin import _matches, make_offer

C = OfferCriteria()


def test_unsupported_gpus_are_rejected_whatever_the_api_returned() -> None:
    assert rejection(make_offer(1), C) is None
    assert "torch 2.6" in str(rejection(make_offer(2, gpu_name="RTX 5090", compute_cap=1200), C))
    assert "compute_cap" in str(rejection(make_offer(3, gpu_name="Future GPU", compute_cap=1000), C))
    assert "compute_cap" in str(rejection(make_offer(4, gpu_name="Tesla P100", compute_cap=600), C))
    assert "gpu_ram" in str(rejection(make_offer(5, gpu_name="RTX 3060", gpu_ram=12288), C))
    assert "cuda_max_good" in str(rejection(make_offer(6, cuda_max_good=12.2), C))
    assert "num_gpus" in str(rejection(make_offer(7, num_gpus=2), C))
    assert "dph_total" in str(rejection(make_offer(8, dph_total=1.5), C))
    assert "direct_port_count" in str(rejection(make_offer(9, direct_port_count=0), C))
    assert "reliability" in str(rejection(make_offer(10, reliability=0.9), C))
    assert "architecture" in str(rejection(make_offer(11, cpu_arch="arm64"), C))
    assert "public IP" in str(rejection(make_offer(12, public_ipaddr=None), C))
    assert "cpu_ghz" in str(rejection(make_offer(14, cpu_name="AMD EPYC 7742", cpu_ghz=2.25), C))
    assert "unknown" in str(rejection({k: v for k, v in make_offer(13).items() if k != "cuda_max_good"}, C))
    # Older rows carry reliability2 only.
    old_row = {k: v for k, v in make_offer(14).items() if k != "reliability"}
    assert rejection({**old_row, "reliability2": 0.99}, C) is None


def test_overrides_move_the_limits() -> None:
    small = make_offer(1, gpu_name="RTX 3060", gpu_ram=12288, dph_total=0.08)
    assert rejection(small, C) is not None
    assert rejection(small, OfferCriteria(min_gpu_ram_gb=12)) is None
    pricey = make_offer(2, dph_total=2.5)
    assert rejection(pricey, OfferCriteria(max_dollars_per_hour=3.0)) is None
    slow_host = make_offer(3, cpu_ghz=2.25)
    assert rejection(slow_host, OfferCriteria(min_cpu_ghz=2.0)) is None


def test_rank_puts_best_value_first_and_drops_unusable() -> None:
    offers = [
        make_offer(1, dlperf_per_dphtotal=100.0),
        make_offer(2, dlperf_per_dphtotal=300.0),
        make_offer(3, gpu_name="RTX 5090", compute_cap=1200, dlperf_per_dphtotal=900.0),
        make_offer(4, dlperf_per_dphtotal=300.0, reliability=0.999),
    ]
    assert [o["id"] for o in rank(offers, C)] == [4, 2, 1]
    assert [o["id"] for o in rank(offers, OfferCriteria(order="dph_total"))][0] in (1, 2, 4)
    cheap = [make_offer(1, dph_total=0.5), make_offer(2, dph_total=0.2)]
    assert [o["id"] for o in rank(cheap, OfferCriteria(order="dph_total"))] == [2, 1]
    assert rank([], C) == []
    # The API is asked for the same order, so its limit keeps the best rows.
    assert api_order(C) == "dlperf_per_dphtotal-" and api_order(OfferCriteria(order="dph_total")) == "dph_total"


def test_search_query_keeps_exactly_the_offers_the_local_check_keeps() -> None:
    """The API-side filter and the local check agree, so the API never hides a usable offer."""
    q = search_query(C)
    offers = [make_offer(1), make_offer(2, gpu_ram=12288), make_offer(3, compute_cap=1200),
              make_offer(4, dph_total=3.0), make_offer(5, cuda_max_good=11.8), make_offer(6, cpu_ghz=2.0)]
    api_side = {o["id"] for o in offers if all(_matches(o.get(k), cond) for k, cond in q.items())}
    assert api_side == {o["id"] for o in offers if rejection(o, C) is None} == {1}


def _record(status: str | None, **extra: object) -> dict[str, object]:
    return {"id": 7, "actual_status": status, "public_ipaddr": "198.51.100.4",
            "ports": {"8000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41234"}]}, **extra}


def test_assess_walks_loading_to_running_with_the_mapped_port() -> None:
    assert assess(_record(None), 8000, 1, 60).phase is Phase.WAITING
    assert assess(_record("loading"), 8000, 30, 60).reason == "loading"
    ready = assess(_record("running"), 8000, 40, 60)
    assert (ready.phase, ready.ip, ready.port) == (Phase.RUNNING, "198.51.100.4", 41234)
    # Running but Vast has not published the port yet: keep waiting.
    assert assess(_record("running", ports={}), 8000, 40, 60).phase is Phase.WAITING
    assert assess(_record("running"), 9000, 40, 60).phase is Phase.WAITING


def test_assess_fails_dead_instances_and_times_out() -> None:
    for dead in ("exited", "unknown", "offline"):
        a = assess(_record(dead, status_msg="Error response from daemon"), 8000, 5, 60)
        assert a.phase is Phase.FAILED and dead in a.reason and "daemon" in a.reason
    assert assess(None, 8000, 5, 60).phase is Phase.FAILED
    assert assess(_record("loading"), 8000, 61, 60).phase is Phase.TIMED_OUT
    assert assess(_record("running", public_ipaddr="not-an-ip"), 8000, 5, 60).phase is Phase.FAILED


def test_mapped_port_skips_bad_bindings() -> None:
    rec = {"ports": {"8000/tcp": [{"HostIp": "::", "HostPort": ""}, {"HostIp": "0.0.0.0", "HostPort": "40001"}]}}
    assert mapped_port(rec, 8000) == 40001
    assert mapped_port({"ports": None}, 8000) is None


def test_health_verdict() -> None:
    ok = {"status": "ok", "llm": {"reachable": True}, "tts": {"engine": "chatterbox"}}
    assert health_verdict(ok).summary == "status ok, llm reachable True, tts chatterbox"
    assert health_verdict(ok).ready(accept_degraded=False)
    degraded = health_verdict({"status": "degraded", "llm": {"reachable": True}, "tts": {"engine": "piper"}})
    assert degraded.state == "degraded" and not degraded.ready(False) and degraded.ready(True)
    assert health_verdict(["ok"]).state == "down" and not health_verdict({"status": "starting"}).ready(True)


def test_degraded_counts_as_failed_only_after_the_grace() -> None:
    assert not degraded_too_long(None, 500.0, 180.0)
    assert not degraded_too_long(400.0, 500.0, 180.0)
    assert degraded_too_long(300.0, 500.0, 180.0)


def test_split_labelled_separates_live_and_dead() -> None:
    rows = [{"id": 1, "label": "ai-telephone", "actual_status": "running"},
            {"id": 2, "label": "ai-telephone", "actual_status": "exited"},
            {"id": 3, "label": "someone-else", "actual_status": "running"},
            {"id": 4, "label": "ai-telephone", "actual_status": None}]
    live, dead = split_labelled(rows, "ai-telephone")
    assert [r["id"] for r in live] == [1, 4] and [r["id"] for r in dead] == [2]


def test_every_offer_filter_has_a_flag_on_up() -> None:
    """The README says the offer filters are all overridable: each OfferCriteria field has a flag."""
    import dataclasses

    from deploy.vastai.cli import _override, build_parser

    args = build_parser().parse_args([
        "up", "--max-price", "2", "--min-gpu-ram", "24", "--min-cuda", "12.8", "--min-reliability", "0.9",
        "--disk", "80", "--order", "dph_total", "--gpus", "2", "--min-compute-cap", "800", "--max-compute-cap", "890",
        "--exclude-gpu", "A100", "--exclude-gpu", "H100", "--min-inet-down", "500", "--min-direct-ports", "2",
        "--offer-limit", "10", "--min-cpu-ghz", "4.2",
    ])
    crit = _override(OfferCriteria(), args)
    changed = {f.name for f in dataclasses.fields(OfferCriteria) if getattr(crit, f.name) != getattr(C, f.name)}
    assert changed == {f.name for f in dataclasses.fields(OfferCriteria)}
    assert crit.excluded_gpu_names == ("A100", "H100") and crit.num_gpus == 2 and crit.limit == 10
