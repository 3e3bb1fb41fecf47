"""Rules: what the emulated customer or M-Pesa does for a matching request, and its outcome."""

from __future__ import annotations

from dataclasses import dataclass

from pesa.emulator._models import CallbackAction, Rule

__all__ = ["SUCCESS", "Outcome", "RuleBook", "Scenario"]


@dataclass(frozen=True)
class Scenario:
    """What a test phone number makes the emulated customer do (the README table)."""

    result_code: int
    callback: CallbackAction = "deliver"
    description: str = ""


SUCCESS = Scenario(0, description="success")


@dataclass
class Outcome:
    """How one request ends: its result, when, and what happens to its callback."""

    result_code: int | str
    result_desc: str | None
    delay: float
    callback: CallbackAction
    callback_delay: float
    callback_first: bool
    # callback="timeout" only: M-Pesa processed the request although the queue timed out.
    processed: bool = False


class RuleBook:
    """The active rules, newest first, with their remaining uses."""

    def __init__(self) -> None:
        self._rules: list[Rule] = []
        self._uses: dict[str, int] = {}

    def add(self, rule: Rule) -> Rule:
        self._rules.insert(0, rule)
        if rule.times is not None:
            self._uses[rule.id] = rule.times
        return rule

    def remove(self, rule_id: str) -> bool:
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.id != rule_id]
        self._uses.pop(rule_id, None)
        return len(self._rules) != before

    def clear(self) -> None:
        self._rules.clear()
        self._uses.clear()

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules)

    def match(
        self, operation: str, phone: str | None, amount: int | None, reference: str | None
    ) -> Rule | None:
        """The newest rule matching the request (one of its uses is spent), if any."""
        for rule in self._rules:
            if rule.operation is not None and rule.operation != operation:
                continue
            if rule.phone is not None and rule.phone != phone:
                continue
            if rule.amount is not None and rule.amount != amount:
                continue
            if rule.account_reference is not None and rule.account_reference != reference:
                continue
            if rule.id in self._uses:
                left = self._uses[rule.id]
                if left <= 0:
                    continue
                self._uses[rule.id] = left - 1
            return rule
        return None

    def outcome(
        self,
        operation: str,
        phone: str | None,
        amount: int | None,
        reference: str | None,
        default_delay: float,
        scenario: Scenario | None = None,
    ) -> Outcome | None:
        """The outcome a rule (or else ``scenario``) sets; None means "behave normally"."""
        if not self._rules:
            # The hot path: no rule to try.
            if scenario is None:
                return None
            return Outcome(scenario.result_code, None, default_delay, scenario.callback, 0.0, False)
        rule = self.match(operation, phone, amount, reference)
        if rule is None:
            if scenario is None:
                return None
            return Outcome(scenario.result_code, None, default_delay, scenario.callback, 0.0, False)
        base = scenario or SUCCESS
        return Outcome(
            base.result_code if rule.result_code is None else rule.result_code,
            rule.result_desc,
            default_delay if rule.delay is None else rule.delay,
            rule.callback,
            rule.callback_delay,
            rule.callback_first,
            rule.processed,
        )
