"""Gunicorn settings for the sandbox application, from the environment ``app_server.up`` sets.

gthread workers: a worker serves a few requests at once (a slow replica does not block health
checks); the master replaces a worker that dies, which the "task killed" drill relies on.
"""

import os

bind = os.environ.get("APP_BIND", "127.0.0.1:18000")
workers = int(os.environ.get("APP_WORKERS", "3"))
worker_class = "gthread"
threads = int(os.environ.get("APP_THREADS", "4"))
timeout = 30
graceful_timeout = 5
keepalive = 2
accesslog = "-"
errorlog = "-"
loglevel = "info"
proc_name = "bisman-erp-sandbox-app"
# Gunicorn 27 opens a control socket in ~/.gunicorn by default, shared by every sandbox on the machine.
control_socket_disable = True
