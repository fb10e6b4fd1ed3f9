"""Prints what the demo run produced: emotion mix, sample labels, one reply per channel, escalations."""
import collections
import json
import pathlib
import sys

run_dir, tag = pathlib.Path(sys.argv[1]), sys.argv[2]


def load(name):
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines() if line.strip()]


emotions, replies, escalations = load("emotions.jsonl"), load("replies.jsonl"), load("escalations.jsonl")
print(f"\n== {len(emotions)} emotion results (topic emotions)")
mix = collections.Counter(e["primary_emotion"] for e in emotions)
for label, n in mix.most_common():
    print(f"  {label:<15} {n:>5}  {'#' * max(1, n * 40 // max(mix.values()))}")
langs = collections.Counter(e.get("language", "und") for e in emotions)
print("  by language: " + ", ".join(f"{lang} {n}" for lang, n in langs.most_common()))
for conv in ("-conv-angry", "-conv-angry-zh"):
    turns = [e for e in emotions if e["conversation_id"].endswith(conv)]
    if turns:
        print(f"  {conv[1:]} ({turns[0].get('language', 'und')}), turn by turn: "
              + " -> ".join(f"{e['primary_emotion']} ({e['negativity']:.2f})" for e in turns))
print("  sample:")
for e in emotions[:: max(1, len(emotions) // 8)][:8]:
    print(f"    {e['message_id']:<22} {e['channel']:<7} {e['primary_emotion']:<15} labels={','.join(e['labels']):<28}"
          f" confidence={e['confidence']:.2f} negativity={e['negativity']:.2f}")

print(f"\n== {len(replies)} drafted replies (topics replies.<channel>)")
seen = set()
for r in replies:
    key = (r["channel"], r["language"])
    if key in seen:
        continue
    seen.add(key)
    text = r.get("body") or " | ".join(r.get("segments") or [])
    review = "needs review" if r["requires_review"] else "auto-send ok"
    print(f"  [{r['channel']}/{r['language']}] {r['strategy']}/{r['intent']} ({review}, {r['template_id']})")
    if r.get("subject"):
        print(f"    subject: {r['subject']}")
    print("    " + text.replace("\n", "\n    "))

incidents = {ev.get("incident_id") or ev["escalation_id"] for ev in escalations}
print(f"\n== {len(escalations)} escalation events in {len(incidents)} incidents (topic escalations)")
numbers = {}
for ev in escalations:
    incident = numbers.setdefault(ev.get("incident_id") or ev["escalation_id"], len(numbers) + 1)
    scope = ", ".join(f"{k}={v}" for k, v in (ev.get("scope") or {}).items()) if isinstance(ev.get("scope"), dict) else ev.get("scope")
    print(f"  incident {incident:<2} {ev['kind']:<19} {ev['severity']:<8} {scope}  triggers={len(ev.get('trigger_message_ids') or [])}"
          f" degraded={ev['degraded']}")
