from synth.cli import app

app()
