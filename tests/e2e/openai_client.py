"""OpenAI conformance of `medtune serve`, driven by the real `openai` Python client.

Run by tests/e2e/openai_client.rs: `python3 openai_client.py BASE_URL MODEL`. Exits non-zero
with the failed check's message; prints one line per check passed.
"""

import json
import sys
import urllib.error
import urllib.request

import openai
from openai import OpenAI

base, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)
question = [{"role": "user", "content": "What is aspirin used for?"}]


def check(name, ok, detail=""):
    if not ok:
        sys.exit(f"FAILED {name}: {detail}")
    print(f"ok {name}")


def refused(name, call, needle):
    try:
        call()
    except openai.BadRequestError as e:
        message = e.body.get("message", "") if isinstance(e.body, dict) else str(e)
        check(name, needle in message, message)
        return
    check(name, False, "accepted")


def streamed(**kw):
    """The text, choices' finish reasons, usage chunk and per-token logprobs of a stream."""
    texts, finish, usage, tokens = {}, {}, None, []
    for chunk in client.chat.completions.create(model=model, stream=True, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finish[c.index] = c.finish_reason
            if c.logprobs is not None and c.logprobs.content:
                tokens.extend(c.logprobs.content)
    return texts, finish, usage, tokens


# the plain answer, and the same streamed (temperature 0: equal)
plain = client.chat.completions.create(model=model, messages=question, max_tokens=24)
text = plain.choices[0].message.content
check("chat", plain.object == "chat.completion" and len(text) > 0 and plain.usage.completion_tokens <= 24, plain)
texts, finish, usage, _ = streamed(messages=question, max_tokens=24, stream_options={"include_usage": True})
check("stream equals plain", texts == {0: text}, (texts, text))
check("include_usage", usage is not None and usage.completion_tokens == plain.usage.completion_tokens, usage)
check("finish reason", finish == {0: plain.choices[0].finish_reason}, finish)

# max_completion_tokens, n, seed
short = client.chat.completions.create(model=model, messages=question, max_completion_tokens=3)
check("max_completion_tokens", short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length", short.usage)
two = client.chat.completions.create(model=model, messages=question, max_tokens=8, n=2)
check("n", [c.index for c in two.choices] == [0, 1] and two.choices[0].message.content == two.choices[1].message.content, two.choices)
a, b = (client.chat.completions.create(model=model, messages=question, max_tokens=8, temperature=1.0, seed=5) for _ in range(2))
check("seed", a.choices[0].message.content == b.choices[0].message.content, (a.choices, b.choices))

# stop strings: the text up to the stop, plain and streamed
stop = text[len(text) // 2 : len(text) // 2 + 3]
cut = text[: text.index(stop)]
stopped = client.chat.completions.create(model=model, messages=question, max_tokens=24, stop=[stop, "\u0000never"])
check("stop", stopped.choices[0].message.content == cut and stopped.choices[0].finish_reason == "stop", (stop, stopped.choices[0]))
texts, finish, _, _ = streamed(messages=question, max_tokens=24, stop=stop)
check("stop streamed", texts == {0: cut} and finish == {0: "stop"}, (stop, texts, finish))

# log-probabilities: greedy picks the most likely token
lp = client.chat.completions.create(model=model, messages=question, max_tokens=6, logprobs=True, top_logprobs=3)
content = lp.choices[0].logprobs.content
check("logprobs count", len(content) == lp.usage.completion_tokens, len(content))
check(
    "logprobs greedy",
    all(len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token and abs(t.top_logprobs[0].logprob - t.logprob) < 1e-5 and t.logprob <= 0 for t in content),
    content,
)
_, _, _, tokens = streamed(messages=question, max_tokens=6, logprobs=True, top_logprobs=3)
check("logprobs streamed", [t.token for t in tokens] == [t.token for t in content], tokens)

# content parts and the developer role
parts = client.chat.completions.create(
    model=model,
    max_tokens=24,
    messages=[{"role": "user", "content": [{"type": "text", "text": "What is aspirin "}, {"type": "text", "text": "used for?"}]}],
)
check("content parts", parts.choices[0].message.content == text, parts.choices[0])
dev, system = (
    client.chat.completions.create(model=model, max_tokens=8, messages=[{"role": role, "content": "Answer in one word."}] + question)
    for role in ("developer", "system")
)
check("developer role", dev.usage == system.usage and dev.choices[0].message.content == system.choices[0].message.content, (dev, system))

# what is not supported: a 400 that names it
refused("response_format", lambda: client.chat.completions.create(model=model, messages=question, response_format={"type": "json_object"}), "response_format")
refused("tools", lambda: client.chat.completions.create(model=model, messages=question, tools=[{"type": "function", "function": {"name": "f"}}]), "tools")
refused("unknown field", lambda: client.chat.completions.create(model=model, messages=question, extra_body={"frobnicate": 1}), "frobnicate")
refused("image part", lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]), "image_url")
try:
    client.chat.completions.create(model="gpt-9", messages=question)
    check("unknown model", False, "accepted")
except openai.NotFoundError as e:
    check("unknown model", "gpt-9" in str(e), e)

# text completions
done = client.completions.create(model=model, prompt="Aspirin is a drug that", max_tokens=5, logprobs=2)
c = done.choices[0]
check("completions", done.object == "text_completion" and done.usage.completion_tokens == len(c.logprobs.tokens) and len(c.text) > 0, done)
check("completions logprobs", all(len(t) == 2 for t in c.logprobs.top_logprobs) and c.logprobs.text_offset[0] == 0, c.logprobs)
pieces = "".join(x.choices[0].text for x in client.completions.create(model=model, prompt="Aspirin is a drug that", max_tokens=5, stream=True))
check("completions streamed", pieces == c.text, (pieces, c.text))

# every error in OpenAI's shape, 405 included
try:
    urllib.request.urlopen(base + "/v1/chat/completions")
    check("405", False, "GET accepted")
except urllib.error.HTTPError as e:
    body = json.loads(e.read())
    check("405", e.code == 405 and "POST" in body["error"]["message"] and body["error"]["type"] == "method_not_allowed", body)
print("all checks passed")
