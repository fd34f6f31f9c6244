"""Judges: whether an edit landed, as verdicts that are records of the run.

- `prompts.py`: what a model judge is asked, per task, and the labels it may answer;
- `http.py`: the Gemini and OpenAI-compatible APIs (timeouts, retries, the key in a header);
- `answers.py`: reading an answer (fenced or chatty JSON, a bare label, a digit);
- `objective.py`: measured verdicts for the signal edits;
- `judge.py`: one round in, one sealed verdict out (with the verdict cache, `cache.py`);
- `verdict.py`: the verdict record; `targets.py`: the manifest's evaluation columns;
- `stage.py`: judges as pipeline stages; `judging.py`: judging a finished run;
- `accuracy.py`: the accuracy table; `page.py`: its charts on the review page.
"""
