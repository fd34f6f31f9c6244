"""Where the words are: word timings from forced alignment or ASR, fillers, word error rate.

- `timing`: `Word` (word, start, end, confidence), its JSON form in the round record, and
  `OutputWords`, the words of a round's output as they travel on the work item.
- `align`: forced alignment of a known English text with pocketsphinx (its model ships in the
  wheel); fillers may sit between any two words of the text and come out as words.
- `asr`: transcripts and word timings from a local faster-whisper (CTranslate2) folder.
- `fillers`: the `fillers` edit: find fillers, cut them at the pause around them.
- `wer`: word (or character) error rate of a transcript against its text.
- `timing_stage`: the `word_timing` stage: the words of every round's output in its record.
- `stage`: the `transcribe` stage: ASR transcripts for rows without `text`.
- `summary`: a round's words and cuts as one short line each (audit, review page).
"""
