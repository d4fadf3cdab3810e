# Usage: python3 models/src/chat_template/gen_jinja2_cases.py tests/fixtures/chat_templates \
#   > models/src/chat_template/jinja2_cases.json   (jinja2 3.1.x; no torch or transformers needed)
"""Renders chat-template cases with jinja2 configured exactly as transformers 5 does
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its tojson,
raise_exception, strftime_now), for models/src/chat_template/jinja2_cases.json."""
import json, sys
from datetime import datetime
import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda f: datetime.now().strftime(f)

fx = sys.argv[1]
llama3 = open(f"{fx}/llama3.jinja").read()
tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city — °C",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "東京"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7.5}}, "required": ["city"]}}}
call = {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather",
        "arguments": {"city": "Paris", "days": 2}}}]}
inline = {
    "python_reprs": "{{ none }}|{{ true }}|{{ false }}|{{ 1.5 }}|{{ 2 }}|{{ missing }}|",
    "tojson_forms": "{{ x | tojson }}\n{{ x | tojson(indent=2) }}\n{{ x | tojson(indent='\\t', sort_keys=true) }}\n{{ x | tojson(ensure_ascii=true) }}\n{{ x | tojson(separators=(',', ':')) }}\n{{ [] | tojson(indent=2) }}{{ {} | tojson }}",
    "string_methods": "{% for m in messages %}{{ m.content.strip().split(' ')|join('_') }}|{{ m.content.startswith(' He') }}|{{ m.content.lower() }}|{{ m.content|trim|title }}|{{ m.content.replace('l', 'L') }}{% endfor %}",
    "loops": "{% set ns = namespace(found=false, n=0) %}{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}{% if loop.last %}{% set ns.found = true %}{% endif %}{{ loop.index }}/{{ loop.length }}:{{ m.role }}{% if not loop.last %},{% endif %}{% endfor %} n={{ ns.n }} found={{ ns.found }}",
    "whitespace": "{% for m in messages %}\n    {% if m.role == 'user' %}\n  [U] {{ m.content }}\n    {%- else %}\n  [O]{{ m.content }}\n    {% endif %}\n{% endfor %}\n{# comment #}\n  {%+ if add_generation_prompt %}GO{% endif %}\n",
    "dict_methods": "{% for k, v in x.items() %}{{ k }}={{ v }};{% endfor %}{{ x.get('b', 'none') }}{{ x.keys()|list|length }}",
    "slicing_and_tests": "{{ messages[1:]|length }}{{ messages[-1].role }}{{ (messages|last).content is string }}{{ x is mapping }}{{ 'role' in messages[0] }}{{ messages|selectattr('role', 'equalto', 'user')|list|length }}",
}
msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hello world "},
        {"role": "assistant", "content": "Hi — 你好 🙂"}]
x = {"b": [1, 2.5, None, True], "a": "é\"\n<tag>\u0001", "c": {"nested": 1e20, "small": 1.5e-7}}
cases = []
def add(name, template, messages, gen, kwargs, source=None):
    ctx = {"bos_token": "<s>", "eos_token": "</s>", **kwargs}
    tools = ctx.pop("tools", None)
    case = {"name": name, "messages": messages, "add_generation_prompt": gen, "kwargs": kwargs}
    if source is not None: case["source"] = source
    else: case["template"] = template
    try:
        case["rendered"] = env.from_string(source or open(f"{fx}/{template}.jinja").read()).render(
            messages=messages, tools=tools, documents=None, add_generation_prompt=gen, **ctx)
    except jinja2.exceptions.TemplateError as e:
        case["error"] = True; case["error_message"] = str(e)
    cases.append(case)

for name, src in inline.items():
    add(name, None, msgs, True, {"x": x}, source=src)
d = {"date_string": "26 Jul 2024"}
add("llama3_tools_in_user_message", "llama3", msgs[:2], True, {**d, "tools": [tool]})
add("llama3_tools_in_system", "llama3", msgs[:2], True, {**d, "tools": [tool], "tools_in_user_message": False})
add("llama3_tool_call_and_results", "llama3", [msgs[1], call,
    {"role": "tool", "content": "sunny, 21°C"}, {"role": "ipython", "content": {"temp": 21, "sky": "clear"}}], True, {**d, "tools": [tool]})
add("llama3_builtin_tools", "llama3", [msgs[1], {"role": "assistant", "tool_calls": [{"function": {"name": "brave_search", "arguments": {"query": "Paris"}}}]}], False,
    {**d, "builtin_tools": ["brave_search", "code_interpreter"]})
add("llama3_two_tool_calls_raise", "llama3", [msgs[1], {"role": "assistant", "tool_calls": [call["tool_calls"][0], call["tool_calls"][0]]}], False, d)
add("llama3_tools_without_user_raise", "llama3", [msgs[0]], False, {**d, "tools": [tool]})
add("mistral_bad_role_raise", "mistral", [msgs[1], {"role": "tool", "content": "x"}], False, {})
add("chatml_unicode", "chatml", [{"role": "user", "content": "naïve 🙂\n\n  spaced  "}], True, {})
json.dump(cases, sys.stdout, ensure_ascii=False, indent=1)
print()
