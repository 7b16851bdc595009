.PHONY: demo test check
demo:   ## setup, then the local demo DAG
	bash scripts/demo.sh
test:   ## setup, lint, every test tier (what CI runs)
	bash scripts/test.sh
check:  ## setup, lint, the unit tier only (a few minutes)
	bash scripts/test.sh tests/unit
