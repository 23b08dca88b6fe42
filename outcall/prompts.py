"""The bot's words: the default prompt and greeting, and how `{placeholders}` are filled.

Templates use Python's `{name}` placeholders, filled from the call's `variables`.
Write `{{` and `}}` for literal braces. A placeholder without a value is an error at
`/dialout` time, never a surprise in the middle of a call.
"""

from string import Formatter

DEFAULT_PROMPT = """\
You are a friendly, professional assistant making an outbound phone call.
Your words are spoken aloud on a phone line: keep every reply to one or two short
sentences, use plain conversational language, and never use lists, markdown,
emoji or special characters.
You have already greeted the person; do not greet them again.
If the person asks you to stop calling, apologise, say goodbye and end the call.
As soon as the outcome of the call is clear, record it with the record_outcome tool.
When the conversation is finished, say a short goodbye and call the end_call tool.\
"""

DEFAULT_GREETING = "Hello! This is an automated assistant calling. Do you have a moment to talk?"

CHECK_IN = "Are you still there?"
IDLE_GOODBYE = "It seems I've lost you. I'll let you go now. Goodbye!"
MAX_DURATION_GOODBYE = "I'm sorry, we've reached the time limit for this call. Goodbye!"
SHUTDOWN_GOODBYE = "I'm sorry, I have to end our call now. Someone will be in touch. Goodbye!"
TRANSFER_FAILED = "I'm sorry, I couldn't connect you right now. Someone will call you back. Goodbye!"
TRANSFER_LINE = "Of course. I'm transferring you to a colleague now; please stay on the line."
TRANSFER_HOLD = "Please hold while I connect you."  # a warm transfer: while the colleague hears the whisper
TRANSFER_UNAVAILABLE = "I'm sorry, nobody could take your call just now. Someone will call you back soon. Goodbye!"
WHISPER = "A call transferred to you by the assistant. Reason: {reason}. {summary} Press 1 to take the call."
DEFAULT_VOICEMAIL_MESSAGE = (
    "Hello, this is an automated assistant calling. Sorry we missed you. We will try again later. Goodbye!"
)

Variables = dict[str, str | int | float | bool]


class TemplateError(ValueError):
    """A template that cannot be filled: a missing value or a malformed placeholder."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def placeholders(template: str) -> list[str]:
    """The placeholder names in a template, in order of first use."""
    names: list[str] = []
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as e:
        raise TemplateError(f"malformed template ({e}); write {{{{ and }}}} for literal braces")
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(
                f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not allowed: use a plain name like {{first_name}}"
            )
        if name not in names:
            names.append(name)
    return names


def render(template: str, variables: Variables) -> str:
    """Fill a template's placeholders from `variables`; TemplateError names any missing ones."""
    missing = [name for name in placeholders(template) if name not in variables]
    if missing:
        raise TemplateError(f"no value for placeholder(s) {', '.join(missing)}: add them to variables")
    return template.format_map({k: _spoken(v) for k, v in variables.items()})


def system_instruction(prompt: str, variables: Variables) -> str:
    """The LLM's instruction: the rendered prompt followed by every call variable."""
    text = render(prompt, variables)
    if variables:
        details = "\n".join(f"- {name}: {_spoken(value)}" for name, value in variables.items())
        text += f"\n\nDetails for this call:\n{details}"
    return text


def _spoken(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
