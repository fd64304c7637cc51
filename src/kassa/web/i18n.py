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

# The merchant console's words (kassa.web.console).
CONSOLE_MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "console.title": "Kassa console",
        "console.skip": "Skip to content",
        "console.nav": "Console",
        "console.nav.overview": "Overview",
        "console.nav.transactions": "Transactions",
        "console.nav.orders": "Orders",
        "console.nav.invoices": "Invoices",
        "console.nav.webhooks": "Webhooks",
        "console.nav.keys": "API keys",
        "console.mode.live": "Live mode",
        "console.mode.test": "Test mode",
        "console.logout": "Sign out",
        "console.back": "Back to the overview",
        "console.empty": "Nothing here yet.",
        "console.next_page": "Next page",
        "console.test_banner": "Test mode: these are sandbox payments; no real money moves.",
        "console.login.title": "Sign in to the console",
        "console.login.hint": "Sign in with an API key and its secret. A test key opens test "
                              "mode, a live key live mode.",
        "console.login.api_key": "API key",
        "console.login.api_secret": "API secret",
        "console.login.submit": "Sign in",
        "console.login.error.invalid": "That API key and secret do not match an account.",
        "console.login.error.forbidden": "This form was open too long. Please try again.",
        "console.login.error.rate_limited": "Too many attempts. Wait a minute and try again.",
        "console.login.error.rotated": "This API key has been rotated. Sign in with the new "
                                       "one.",
        "console.problem.not_found": "Not found",
        "console.problem.not_found.text": "There is nothing here for this account.",
        "console.problem.forbidden": "Please try again",
        "console.problem.forbidden.text": "This page was open too long or was opened "
                                          "elsewhere. Nothing was changed.",
        "console.problem.bad_request": "That request could not be done",
        "console.problem.bad_request.text": "Nothing was changed.",
        "console.balance.available": "Available balance",
        "console.balance.escrow": "In escrow",
        "console.balance.in_flight": "Refunds on their way",
        "console.balance.spent": "Spent (released to workers)",
        "console.balance.updated": "Last movement: {at}",
        "console.recent_orders": "Recent orders",
        "console.all_orders": "All orders",
        "console.col.order": "Order",
        "console.col.transaction": "Transaction",
        "console.col.refund": "Refund",
        "console.col.created": "Created",
        "console.col.description": "Description",
        "console.col.method": "Method",
        "console.col.amount": "Amount",
        "console.col.status": "Status",
        "console.col.type": "Type",
        "console.col.invoice": "Invoice",
        "console.col.endpoint": "Endpoint",
        "console.col.events": "Events",
        "console.col.event": "Event",
        "console.col.object": "Object",
        "console.col.deliveries": "Deliveries",
        "console.col.attempts": "Attempts",
        "console.filter.type": "Type",
        "console.filter.status": "Status",
        "console.filter.apply": "Apply",
        "console.type.all": "All types",
        "console.type.payment": "Payment",
        "console.type.refund": "Refund",
        "console.type.deposit": "Deposit",
        "console.type.collection": "Collection",
        "console.tstatus.all": "All statuses",
        "console.tstatus.completed": "Completed",
        "console.tstatus.pending": "Pending",
        "console.tstatus.failed": "Failed",
        "console.order.title": "Order",
        "console.order.task": "Task",
        "console.order.paid_at": "Paid",
        "console.order.released": "Released to the worker",
        "console.order.refunded": "Refunded",
        "console.refunds": "Refunds",
        "console.no_refunds": "No refunds.",
        "console.refund.title": "Refund this payment",
        "console.refund.amount": "Amount ({currency})",
        "console.refund.amount_hint": "Leave empty to refund everything still in escrow.",
        "console.refund.bad_amount": "The amount must be a plain number with at most two "
                                     "decimals, such as 12.50.",
        "console.refund.reason": "Reason",
        "console.refund.detail": "Details (required for “other”)",
        "console.refund.method": "Refund to",
        "console.refund.submit": "Refund",
        "console.reason.task_cancelled": "Task cancelled",
        "console.reason.quality_issue": "Quality issue",
        "console.reason.task_failed": "Task failed",
        "console.reason.duplicate_payment": "Duplicate payment",
        "console.reason.other": "Other",
        "console.refund_method.original": "The original payment method",
        "console.refund_method.balance": "The account balance",
        "console.rstatus.processing": "Processing",
        "console.rstatus.completed": "Completed",
        "console.rstatus.failed": "Failed",
        "console.invoice.download": "Download invoice (PDF)",
        "console.invoice.hint": "Every paid order has an invoice.",
        "console.webhooks.endpoints": "Endpoints",
        "console.webhooks.none": "No endpoints yet.",
        "console.webhooks.add": "Add an endpoint",
        "console.webhooks.url_hint": "Live mode: https, and a public address.",
        "console.webhooks.description": "Description (optional)",
        "console.webhooks.events": "Recent events",
        "console.webhooks.endpoint": "Endpoint",
        "console.webhooks.log": "Delivery log",
        "console.estatus.enabled": "Enabled",
        "console.estatus.disabled": "Disabled",
        "console.dstatus.pending": "Pending",
        "console.dstatus.succeeded": "Delivered",
        "console.dstatus.failed": "Failed",
        "console.next_attempt": "Next try: {at}",
        "console.resend": "Resend",
        "console.resend_event": "Resend {event}",
        "console.keys.title": "Keys ({mode})",
        "console.keys.expires": "Stops working",
        "console.keys.no_expiry": "—",
        "console.keys.grace": "When should the current key stop working?",
        "console.keys.grace.0": "Now",
        "console.keys.grace.3600": "In 1 hour",
        "console.keys.grace.86400": "In 24 hours",
        "console.keys.rotate_hint": "A new key and secret are made and shown once. Other "
                                    "console sessions of this mode are signed out.",
        "console.keys.rotate": "Rotate API key",
        "console.keys.confirm_secret": "Your current API secret (of the key you signed in "
                                       "with)",
        "console.keys.bad_secret": "That is not the secret of the key you signed in with. "
                                   "Nothing was rotated.",
        "console.keys.new": "Your new API key",
        "console.keys.shown_once": "Copy it now: it is shown only once, and Kassa keeps only "
                                   "its hash.",
        "console.secret.title": "Webhook signing secret",
        "console.secret.hint": "A new secret signs from now on; the old one also signs for "
                               "24 hours, so receivers can switch over.",
        "console.secret.rotate": "Rotate webhook secret",
        "console.secret.new": "Your new webhook secret",
        "console.secret.previous_until": "The previous secret also signs until {at}.",
        "console.secret.live_only": "The webhook secret signs live deliveries too: sign in "
                                    "with the live key to rotate it.",
        "console.notice.refund_requested": "Refund requested.",
        "console.notice.resent": "Event queued to be sent again.",
        "console.notice.endpoint_created": "Endpoint added.",
    },
    "zh": {
        "console.title": "Kassa 商户后台",
        "console.skip": "跳到正文",
        "console.nav": "后台导航",
        "console.nav.overview": "概览",
        "console.nav.transactions": "交易记录",
        "console.nav.orders": "订单",
        "console.nav.invoices": "发票",
        "console.nav.webhooks": "Webhook",
        "console.nav.keys": "API 密钥",
        "console.mode.live": "正式模式",
        "console.mode.test": "测试模式",
        "console.logout": "退出登录",
        "console.back": "返回概览",
        "console.empty": "暂无内容。",
        "console.next_page": "下一页",
        "console.test_banner": "测试模式：以下均为沙箱支付，不会产生真实资金变动。",
        "console.login.title": "登录商户后台",
        "console.login.hint": "请使用 API 密钥及其 Secret 登录。测试密钥进入测试模式，正式密钥进入"
                              "正式模式。",
        "console.login.api_key": "API 密钥",
        "console.login.api_secret": "API Secret",
        "console.login.submit": "登录",
        "console.login.error.invalid": "API 密钥与 Secret 不匹配任何账户。",
        "console.login.error.forbidden": "表单打开时间过长，请重试。",
        "console.login.error.rate_limited": "尝试次数过多，请一分钟后再试。",
        "console.login.error.rotated": "该 API 密钥已轮换，请使用新的密钥登录。",
        "console.problem.not_found": "未找到",
        "console.problem.not_found.text": "该账户下没有此内容。",
        "console.problem.forbidden": "请重试",
        "console.problem.forbidden.text": "页面打开时间过长或已在别处打开，未做任何更改。",
        "console.problem.bad_request": "无法完成该请求",
        "console.problem.bad_request.text": "未做任何更改。",
        "console.balance.available": "可用余额",
        "console.balance.escrow": "托管中",
        "console.balance.in_flight": "退款途中",
        "console.balance.spent": "已支出（已放款给接单者）",
        "console.balance.updated": "最近变动：{at}",
        "console.recent_orders": "最近订单",
        "console.all_orders": "全部订单",
        "console.col.order": "订单",
        "console.col.transaction": "交易",
        "console.col.refund": "退款",
        "console.col.created": "创建时间",
        "console.col.description": "说明",
        "console.col.method": "支付方式",
        "console.col.amount": "金额",
        "console.col.status": "状态",
        "console.col.type": "类型",
        "console.col.invoice": "发票",
        "console.col.endpoint": "端点",
        "console.col.events": "事件",
        "console.col.event": "事件",
        "console.col.object": "对象",
        "console.col.deliveries": "投递",
        "console.col.attempts": "尝试记录",
        "console.filter.type": "类型",
        "console.filter.status": "状态",
        "console.filter.apply": "筛选",
        "console.type.all": "全部类型",
        "console.type.payment": "支付",
        "console.type.refund": "退款",
        "console.type.deposit": "充值",
        "console.type.collection": "收款",
        "console.tstatus.all": "全部状态",
        "console.tstatus.completed": "已完成",
        "console.tstatus.pending": "处理中",
        "console.tstatus.failed": "失败",
        "console.order.title": "订单",
        "console.order.task": "任务",
        "console.order.paid_at": "支付时间",
        "console.order.released": "已放款给接单者",
        "console.order.refunded": "已退款",
        "console.refunds": "退款",
        "console.no_refunds": "暂无退款。",
        "console.refund.title": "退款",
        "console.refund.amount": "金额（{currency}）",
        "console.refund.amount_hint": "留空则退还托管中的全部金额。",
        "console.refund.bad_amount": "金额须为普通数字，最多两位小数，例如 12.50。",
        "console.refund.reason": "原因",
        "console.refund.detail": "详细说明（选择“其他”时必填）",
        "console.refund.method": "退款至",
        "console.refund.submit": "退款",
        "console.reason.task_cancelled": "任务取消",
        "console.reason.quality_issue": "质量问题",
        "console.reason.task_failed": "任务失败",
        "console.reason.duplicate_payment": "重复支付",
        "console.reason.other": "其他",
        "console.refund_method.original": "原支付方式",
        "console.refund_method.balance": "账户余额",
        "console.rstatus.processing": "处理中",
        "console.rstatus.completed": "已完成",
        "console.rstatus.failed": "失败",
        "console.invoice.download": "下载发票（PDF）",
        "console.invoice.hint": "每笔已支付的订单都有发票。",
        "console.webhooks.endpoints": "端点",
        "console.webhooks.none": "暂无端点。",
        "console.webhooks.add": "添加端点",
        "console.webhooks.url_hint": "正式模式：须为 https 且为公网地址。",
        "console.webhooks.description": "说明（可选）",
        "console.webhooks.events": "最近事件",
        "console.webhooks.endpoint": "端点",
        "console.webhooks.log": "投递记录",
        "console.estatus.enabled": "已启用",
        "console.estatus.disabled": "已停用",
        "console.dstatus.pending": "等待中",
        "console.dstatus.succeeded": "已送达",
        "console.dstatus.failed": "失败",
        "console.next_attempt": "下次尝试：{at}",
        "console.resend": "重新发送",
        "console.resend_event": "重新发送 {event}",
        "console.keys.title": "密钥（{mode}）",
        "console.keys.expires": "失效时间",
        "console.keys.no_expiry": "—",
        "console.keys.grace": "当前密钥何时失效？",
        "console.keys.grace.0": "立即",
        "console.keys.grace.3600": "1 小时后",
        "console.keys.grace.86400": "24 小时后",
        "console.keys.rotate_hint": ("将生成新的密钥和 Secret，仅显示一次。"
                                      "该模式下的其他后台会话将被退出。"),
        "console.keys.rotate": "轮换 API 密钥",
        "console.keys.confirm_secret": "当前 API Secret（登录所用密钥的 Secret）",
        "console.keys.bad_secret": "该 Secret 与登录所用的密钥不符，未做任何轮换。",
        "console.keys.new": "新的 API 密钥",
        "console.keys.shown_once": "请立即复制：仅显示一次，Kassa 只保存其哈希值。",
        "console.secret.title": "Webhook 签名密钥",
        "console.secret.hint": ("新密钥从现在起用于签名；旧密钥在 24 小时内同时签名，"
                                "便于接收方切换。"),
        "console.secret.rotate": "轮换 Webhook 密钥",
        "console.secret.new": "新的 Webhook 密钥",
        "console.secret.previous_until": "旧密钥将同时签名至 {at}。",
        "console.secret.live_only": "Webhook 密钥也用于正式环境的签名：请使用正式密钥登录后轮换。",
        "console.notice.refund_requested": "已提交退款。",
        "console.notice.resent": "事件已加入重新发送队列。",
        "console.notice.endpoint_created": "端点已添加。",
    },
}
for _lang, _words in CONSOLE_MESSAGES.items():
    MESSAGES[_lang].update(_words)

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
