"""What people read about a verdict: markdown and terminal tables (`markdown`), the self-contained
reports/index.html (`html`) and the GitHub Actions summary, outputs and annotations (`github`).

It may import `evaluate`, `registry` and below; the gate and promote stages import it, `evaluate` never does.
"""
