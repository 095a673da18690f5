"""The block-notice web server at the landing address (docs/landing.md).

- server.py: HTTP (h11 on asyncio), the per-request decision, TLS server-name refusal
- page.py: language choice, templates and the values put into them
- stats.py: counters and their Prometheus families
- process.py: the landing process under `blokir serve`, and `blokir landing` on its own
"""
