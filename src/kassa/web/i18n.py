"""The checkout's words in English and Chinese, which of them a request gets, and amounts
as a payer reads them.

The language comes from `?lang=en|zh` (then remembered in the `kassa_lang` cookie), else
that cookie, else the browser's Accept-Language, else English.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from kassa.core.money import Money

LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "kassa_lang"
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600
_ACCEPT_LANGUAGE_MAX = 512  # characters of the header worth reading

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "page_title": "Checkout",
        "heading": "Pay",
        "language": "Language",
        "test_mode": "Test mode: no real money moves.",
        "amount": "Amount",
        "description": "For",
        "method": "Payment method",
        "status": "Status",
        "time_left": "Time left to pay",
        "card_on_file": "Card",
        "method.alipay": "Alipay",
        "method.wechat": "WeChat Pay",
        "method.card": "Card",
        "method.bank_transfer": "Bank transfer",
        "method.usdt": "USDT",
        "method.balance": "Account balance",
        "status.pending": "Waiting for payment",
        "status.processing": "Processing",
        "status.completed": "Paid",
        "status.failed": "Failed",
        "status.expired": "Expired",
        "status.refunded": "Refunded",
        "qr_alt": "QR code to pay with {method}",
        "scan_hint": "Scan the QR code with {method} to pay.",
        "pay_link": "Open {method} to pay",
        "card_number": "Card number",
        "card_hint": "Test cards: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is "
                     "declined, 4000 0000 0000 9995 has insufficient funds.",
        "pay_card": "Pay {amount}",
        "simulate_hint": "Test mode: choose how this payment ends.",
        "simulate_success": "Simulate successful payment",
        "simulate_failure": "Simulate failed payment",
        "return_link": "Return to the merchant",
        "message.processing": "Your payment is being processed…",
        "message.paid": "Payment received. Thank you!",
        "message.redirecting": "Payment received. Returning you to the merchant…",
        "message.declined": "Your card was declined.",
        "message.insufficient_funds": "Your card has insufficient funds.",
        "message.failed": "The payment failed.",
        "message.expired": "This payment has expired.",
        "message.refunded": "This payment has been refunded.",
        "notice.card_invalid": "That is not a valid card number. Check it and try again.",
        "notice.card_not_test_card": "Test mode takes only the test cards listed below. "
                                     "Nothing was charged.",
        "notice.not_allowed": "This payment can no longer be changed here.",
        "notice.expired": "This payment has expired.",
        "not_found.title": "Payment not found",
        "not_found.text": "This payment link is not valid. Ask the merchant for a new one.",
        "forbidden.title": "Please try again",
        "forbidden.text": "This page was open too long or was opened elsewhere. Nothing was "
                          "changed.",
        "forbidden.back": "Back to the payment",
        "bad_request.title": "Something was wrong with that request",
        "bad_request.text": "Nothing was changed.",
    },
    "zh": {
        "page_title": "收银台",
        "heading": "付款",
        "language": "语言",
        "test_mode": "测试模式：不会产生真实扣款。",
        "amount": "金额",
        "description": "用途",
        "method": "支付方式",
        "status": "状态",
        "time_left": "剩余支付时间",
        "card_on_file": "银行卡",
        "method.alipay": "支付宝",
        "method.wechat": "微信支付",
        "method.card": "银行卡",
        "method.bank_transfer": "银行转账",
        "method.usdt": "USDT",
        "method.balance": "账户余额",
        "status.pending": "等待支付",
        "status.processing": "处理中",
        "status.completed": "已支付",
        "status.failed": "支付失败",
        "status.expired": "已过期",
        "status.refunded": "已退款",
        "qr_alt": "使用{method}扫码支付的二维码",
        "scan_hint": "请使用{method}扫描二维码完成支付。",
        "pay_link": "打开{method}支付",
        "card_number": "卡号",
        "card_hint": "测试卡号：4242 4242 4242 4242 支付成功，4000 0000 0000 0002 被拒绝，"
                     "4000 0000 0000 9995 余额不足。",
        "pay_card": "支付 {amount}",
        "simulate_hint": "测试模式：请选择本次支付的结果。",
        "simulate_success": "模拟支付成功",
        "simulate_failure": "模拟支付失败",
        "return_link": "返回商户",
        "message.processing": "正在处理您的付款…",
        "message.paid": "支付成功，谢谢！",
        "message.redirecting": "支付成功，正在返回商户…",
        "message.declined": "您的银行卡被拒绝。",
        "message.insufficient_funds": "您的银行卡余额不足。",
        "message.failed": "支付失败。",
        "message.expired": "该订单已过期。",
        "message.refunded": "该笔款项已退款。",
        "notice.card_invalid": "卡号无效，请检查后重试。",
        "notice.card_not_test_card": "测试模式仅接受下列测试卡号，未产生任何扣款。",
        "notice.not_allowed": "该订单已无法在此进行此操作。",
        "notice.expired": "该订单已过期。",
        "not_found.title": "未找到该订单",
        "not_found.text": "该支付链接无效，请向商户索取新的链接。",
        "forbidden.title": "请重试",
        "forbidden.text": "页面打开时间过长或已在别处打开，未做任何更改。",
        "forbidden.back": "返回付款页面",
        "bad_request.title": "请求有误",
        "bad_request.text": "未做任何更改。",
    },
}

NOTICES = frozenset(k.removeprefix("notice.") for k in MESSAGES["en"] if k.startswith("notice."))

_SYMBOLS = {"CNY": "¥", "USD": "$", "EUR": "€"}


@dataclass(frozen=True, slots=True)
class Translator:
    lang: str
    messages: Mapping[str, str]

    def __call__(self, key: str, **values: str) -> str:
        text = self.messages.get(key) or MESSAGES[DEFAULT_LANGUAGE][key]
        return text.format(**values) if values else text


def translator(lang: str) -> Translator:
    return Translator(lang, MESSAGES[lang if lang in MESSAGES else DEFAULT_LANGUAGE])


def from_accept_language(header: str | None) -> str | None:
    """The first of our languages the browser asks for, by its q-values ("zh-CN,zh;q=0.9,
    en;q=0.8" -> zh); None when it asks for none of them."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header[:_ACCEPT_LANGUAGE_MAX].split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().split("-")[0].lower()
        if primary not in LANGUAGES:
            continue
        quality = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value)
            except ValueError:
                continue
        if 0 < quality <= 1:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else None


def pick_language(query_lang: str | None, cookie_lang: str | None,
                  accept_language: str | None) -> str:
    for choice in (query_lang, cookie_lang):
        if choice in LANGUAGES:
            return str(choice)
    return from_accept_language(accept_language) or DEFAULT_LANGUAGE


def format_amount(minor: int, currency: str) -> str:
    """5000 CNY minor units -> "¥50.00 CNY", exactly (Money's Decimal, never a float)."""
    value: Decimal = Money(minor, currency).to_decimal()
    symbol = _SYMBOLS.get(currency, "")
    return f"{symbol}{value:,} {currency}"
