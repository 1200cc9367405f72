# The Anchor template repository. Needs Python 3.11+ and make; uv is used if on PATH,
# otherwise installed once into build/tools.
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS ?= never

ifeq ($(shell command -v uv 2>/dev/null),)
UV := build/tools/bin/uv
else
UV := uv
endif

DEMO_DIR ?= build/demo

.DEFAULT_GOAL := help
.PHONY: help tools sync test demo bench-http bench-auth bench-tasks bench-scale lint

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

tools:
ifneq ($(UV),uv)
	@test -x $(UV) || { python3 -m venv build/tools && build/tools/bin/pip install -q "uv==$(UV_VERSION)"; }
endif

sync: tools
	@$(UV) sync --quiet --locked

test: sync ## Run every test: generators, runtime, and generated projects end to end
	$(UV) run pytest

lint: sync ## Lint the template repo's own code
	$(UV) run ruff check tests hooks bench
	$(UV) run ruff format --check tests hooks bench

demo: sync ## Generate a demo project in build/demo and run it (API + embedded PostgreSQL)
	rm -rf $(DEMO_DIR)
	$(UV) run copier copy --trust --defaults --vcs-ref HEAD $(CURDIR) $(DEMO_DIR)
	$(MAKE) -C $(DEMO_DIR) gen run

bench-http: sync ## Benchmark the generated app against hand-written FastAPI + asyncpg
	$(UV) run python bench/bench_http.py

bench-auth: sync ## Cost of bearer-token verification per request (public vs authenticated)
	$(UV) run python bench/bench_auth.py

bench-tasks: tools ## Benchmark the task engine against pgqueuer, procrastinate and bare SQL
	@$(UV) sync --quiet --locked --all-groups
	$(UV) run --group bench python bench/bench_tasks.py

bench-scale: sync ## Task throughput with 1, 2, 4 worker processes and 2 API processes
	$(UV) run python bench/bench_scale.py
