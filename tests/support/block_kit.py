"""A JSON Schema of the Block Kit shapes the Slack sink emits (incoming-webhook message with
``header``, ``section`` (text or fields), ``actions`` with link buttons and ``context``), with
Slack's documented limits: https://api.slack.com/reference/block-kit/blocks."""

from __future__ import annotations

from typing import Any

import jsonschema

PLAIN = {"type": "object", "required": ["type", "text"], "additionalProperties": False,
         "properties": {"type": {"const": "plain_text"}, "text": {"type": "string", "minLength": 1}, "emoji": {"type": "boolean"}}}
MRKDWN = {"type": "object", "required": ["type", "text"], "additionalProperties": False,
          "properties": {"type": {"const": "mrkdwn"}, "text": {"type": "string", "minLength": 1}, "verbatim": {"type": "boolean"}}}


def _text(kind: dict[str, Any], max_len: int) -> dict[str, Any]:
    return {"allOf": [kind, {"properties": {"text": {"maxLength": max_len}}}]}


HEADER = {"type": "object", "required": ["type", "text"], "additionalProperties": False,
          "properties": {"type": {"const": "header"}, "text": _text(PLAIN, 150), "block_id": {"type": "string", "maxLength": 255}}}
SECTION = {"type": "object", "required": ["type"], "additionalProperties": False,
           "anyOf": [{"required": ["text"]}, {"required": ["fields"]}],
           "properties": {"type": {"const": "section"}, "block_id": {"type": "string", "maxLength": 255},
                          "text": {"anyOf": [_text(MRKDWN, 3000), _text(PLAIN, 3000)]},
                          "fields": {"type": "array", "minItems": 1, "maxItems": 10,
                                     "items": {"anyOf": [_text(MRKDWN, 2000), _text(PLAIN, 2000)]}}}}
BUTTON = {"type": "object", "required": ["type", "text"], "additionalProperties": False,
          "properties": {"type": {"const": "button"}, "text": _text(PLAIN, 75),
                         "url": {"type": "string", "maxLength": 3000, "pattern": "^https?://"},
                         "action_id": {"type": "string", "maxLength": 255}, "value": {"type": "string", "maxLength": 2000},
                         "style": {"enum": ["primary", "danger"]}}}
ACTIONS = {"type": "object", "required": ["type", "elements"], "additionalProperties": False,
           "properties": {"type": {"const": "actions"}, "block_id": {"type": "string", "maxLength": 255},
                          "elements": {"type": "array", "minItems": 1, "maxItems": 25, "items": BUTTON}}}
CONTEXT = {"type": "object", "required": ["type", "elements"], "additionalProperties": False,
           "properties": {"type": {"const": "context"}, "block_id": {"type": "string", "maxLength": 255},
                          "elements": {"type": "array", "minItems": 1, "maxItems": 10,
                                       "items": {"anyOf": [_text(MRKDWN, 2000), _text(PLAIN, 2000)]}}}}
MESSAGE = {"type": "object", "required": ["blocks"], "additionalProperties": False,
           "properties": {"text": {"type": "string", "maxLength": 40000},
                          "blocks": {"type": "array", "minItems": 1, "maxItems": 50,
                                     "items": {"oneOf": [HEADER, SECTION, ACTIONS, CONTEXT]}}}}


def validate_message(payload: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``payload`` is a message of these shapes."""
    jsonschema.validate(payload, MESSAGE)
