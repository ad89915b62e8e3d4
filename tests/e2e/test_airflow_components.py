"""The session's Airflow is Airflow's real components, each its own process, on PostgreSQL."""

from __future__ import annotations

from bisman_sandbox.airflow_local import COMPONENTS, AirflowLocal
from bisman_sandbox.process import pid_alive, read_pid


def test_each_component_runs_as_its_own_process_on_a_postgres_metadata_database(airflow):
    af = AirflowLocal.from_env()
    pids = {c: read_pid(af._processes, c) for c in COMPONENTS}
    assert all(pid is not None and pid_alive(pid) for pid in pids.values()), pids
    assert len(set(pids.values())) == len(COMPONENTS)
    health = airflow.session.get(f"{af.url}/api/v2/monitor/health", timeout=10).json()
    assert {part: health[part]["status"] for part in ("metadatabase", "scheduler", "triggerer",
                                                       "dag_processor")} == dict.fromkeys(
        ("metadatabase", "scheduler", "triggerer", "dag_processor"), "healthy")
    assert not list(af.home.rglob("*.db")), "a SQLite file under the Airflow home"
    assert af.metadata.healthy()


def test_airflow_listens_on_loopback_only(airflow):
    import psutil

    af = AirflowLocal.from_env()
    ours: set[int] = set()
    for component in COMPONENTS:
        root = psutil.Process(read_pid(af._processes, component))
        ours |= {root.pid, *(child.pid for child in root.children(recursive=True))}
    listening = [c for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in ours]
    assert listening, "the API server listens somewhere"
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}, [(c.pid, c.laddr) for c in listening]
