"""Monitoring as code: Grafana dashboards (``dashboards``), Prometheus alert rules and their promtool
tests (``rules/``), and the clients the rollout's monitoring phase uses to deliver and verify them."""
