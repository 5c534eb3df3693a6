"""``--backend openai``: any OpenAI-compatible completions server (``/v1/completions``): ``vllm serve``, SGLang, TGI,
TensorRT-LLM's server.

- Prompts go out as token ids (``"prompt": [ids]``, which vLLM and SGLang accept), so the model sees exactly the
  dataset's ``tok_input``. A server that refuses token ids gets the prompt text instead (detected at start).
- Output token ids: vLLM returns them with ``"return_token_ids": true`` (per streamed chunk: the delta ids). Servers
  without that field are re-tokenized from the text with the dataset's tokenizer; ``provenance()["token_ids"]`` is
  ``"exact"`` or ``"retokenized"`` accordingly (decided by one probe request in ``start``).
- Server/SingleStream stream (SSE) and report the first token on the first chunk that carries output; Offline sends
  plain requests. At most ``--max-concurrency`` requests are in flight.
- Connection errors, timeouts, HTTP 408/429/5xx are retried ``--retries`` times with backoff as long as no output has
  been reported for the request; then the run fails with a message naming the sample and the last error.
- The API key comes only from ``OPENAI_API_KEY`` and is never logged or recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from typing import Any, Sequence
from urllib.parse import urlsplit

from ..errors import HarnessError
from .base import Backend, BackendArgs, DatasetView, EngineFlag, TokenCallback
from .sampling import effective_sampling

log = logging.getLogger(__name__)

API_KEY_ENV = "OPENAI_API_KEY"
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
TOKEN_ID_MODES = ("auto", "exact", "retokenize")
# --engine-arg keys this backend takes (the orchestrator passes a config's engine: mapping to every backend).
SETTING_KEYS = ("api_base", "api_model", "max_concurrency", "request_timeout_s", "retries", "token_ids")


class OpenAIRequestError(RuntimeError):
    """A request failed for good (after retries, or with an error that retrying cannot fix)."""


class _Retryable(Exception):
    pass


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, api_base: str, api_model: str | None = None, *, max_concurrency: int = 64,
                 request_timeout_s: float = 600.0, retries: int = 3, token_ids: str = "auto",
                 sampling_overrides: dict[str, Any] | None = None, server_engine_args: dict[str, Any] | None = None
                 ) -> None:
        self.api_base = _normalize_base(api_base)
        self.api_model = api_model
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise HarnessError(f"--max-concurrency must be an integer >= 1 (got {max_concurrency!r})")
        if not (isinstance(request_timeout_s, (int, float)) and request_timeout_s > 0):
            raise HarnessError(f"--request-timeout-s must be > 0 (got {request_timeout_s!r})")
        if not isinstance(retries, int) or retries < 0:
            raise HarnessError(f"--retries must be an integer >= 0 (got {retries!r})")
        if token_ids not in TOKEN_ID_MODES:
            raise HarnessError(f"--api-token-ids {token_ids!r}: expected one of {', '.join(TOKEN_ID_MODES)}")
        self.max_concurrency = max_concurrency
        self.request_timeout_s = float(request_timeout_s)
        self.retries = retries
        self.token_ids_mode = token_ids
        self.sampling_overrides = dict(sampling_overrides or {})
        self.server_engine_args = dict(server_engine_args or {})
        self.sampling: dict[str, Any] = {}
        self.exact_ids: bool | None = None  # decided by the probe in start()
        self.prompt_as_ids = True
        self._dataset: DatasetView | None = None
        self._tokenizer = None
        self._strip_prefix: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client = None
        self._sem: asyncio.Semaphore | None = None
        self._versions: dict[str, str] = {}

    # ------------------------------------------------------------------------------------------------------- CLI
    cli_title = "openai backend (--backend openai)"
    cli_description = f"An OpenAI-compatible completions server. The API key is read from ${API_KEY_ENV} only."
    cli_flags = (
        EngineFlag(("--api-base",), "api_base", str, "server base URL, e.g. http://127.0.0.1:8000/v1 (/v1 is added "
                   "when the URL has no path)", "URL"),
        EngineFlag(("--api-model",), "api_model", str, "model name the server serves (default: the first one "
                   "/v1/models lists)", "NAME"),
        EngineFlag(("--max-concurrency",), "max_concurrency", int, "requests in flight at most (default 64)", "N"),
        EngineFlag(("--request-timeout-s",), "request_timeout_s", float, "per-request timeout: connect, and between "
                   "streamed chunks (default 600)", "S"),
        EngineFlag(("--retries",), "retries", int, "retries of a request on connection errors, timeouts, HTTP "
                   "408/429/5xx (default 3)", "N"),
        EngineFlag(("--api-token-ids",), "token_ids", str, "output token ids: exact (server returns them: vLLM's "
                   "return_token_ids), retokenize (from the text, with the dataset's tokenizer), auto (probe the "
                   "server; default)", choices=TOKEN_ID_MODES),
    )
    uses_sampling = True

    @classmethod
    def from_args(cls, args: BackendArgs) -> "OpenAIBackend":
        engine_args = dict(args.engine_args)
        settings = {k: engine_args.pop(k) for k in SETTING_KEYS if k in engine_args}
        if not settings.get("api_base"):
            raise HarnessError("--backend openai needs --api-base URL (e.g. http://127.0.0.1:8000/v1)")
        if engine_args:
            log.info("openai: engine arguments %s describe the server; they are recorded, not applied",
                     sorted(engine_args))
        return cls(settings.pop("api_base"), settings.pop("api_model", None),
                   sampling_overrides=dict(args.sampling_overrides), server_engine_args=engine_args, **settings)

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self, dataset: DatasetView, streaming: bool) -> None:
        try:
            import httpx
        except ImportError:
            raise HarnessError("--backend openai needs the httpx package (pip install httpx)") from None
        self._versions = {"httpx": httpx.__version__}
        self._dataset = dataset
        self.sampling = effective_sampling(dataset.benchmark, self.sampling_overrides)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-client", daemon=True)
        self._thread.start()
        try:
            self._call(self._open(httpx))
            self._call(self._probe(dataset))
        except BaseException:
            self.stop()
            raise
        log.info("openai: %s model %s, prompts as %s, output token ids %s, sampling %s", self.api_base,
                 self.api_model, "token ids" if self.prompt_as_ids else "text",
                 "exact" if self.exact_ids else "re-tokenized", self.sampling)

    def _call(self, coro, timeout: float | None = None):
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _open(self, httpx) -> None:
        headers = {"Accept": "application/json"}
        key = os.environ.get(API_KEY_ENV)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        self._client = httpx.AsyncClient(base_url=self.api_base, headers=headers, limits=limits,
                                         timeout=httpx.Timeout(self.request_timeout_s))
        self._sem = asyncio.Semaphore(self.max_concurrency)
        self._httpx = httpx

    async def _probe(self, dataset: DatasetView) -> None:
        """Check the server and model, and find out what it accepts and returns, before LoadGen starts."""
        httpx = self._httpx
        try:
            resp = await self._client.get("/models")
        except httpx.HTTPError as exc:
            raise HarnessError(f"openai: cannot reach {self.api_base}/models: {type(exc).__name__}: {exc}") from None
        if resp.status_code in (401, 403):
            raise HarnessError(f"openai: {self.api_base} refused the request (HTTP {resp.status_code}): "
                               f"set ${API_KEY_ENV} to the server's API key")
        served: list[str] = []
        if resp.status_code == 200:
            try:
                served = [m["id"] for m in resp.json().get("data", [])]
            except (ValueError, KeyError, TypeError, AttributeError):
                served = []
        if self.api_model is None:
            if not served:
                raise HarnessError(f"openai: {self.api_base}/models lists no model; give --api-model NAME")
            self.api_model = served[0]
        elif served and self.api_model not in served:
            raise HarnessError(f"openai: model {self.api_model!r} is not served by {self.api_base} "
                               f"(it serves: {', '.join(served)})")

        prompt_ids = list(dataset.prompt_token_ids(0))
        body = {**self._body(prompt_ids, stream=False), "max_tokens": 2}
        if self.token_ids_mode != "retokenize":
            body["return_token_ids"] = True
        status, doc = await self._post_json(body)
        if status in (400, 422) and "return_token_ids" in body:
            if self.token_ids_mode == "exact":
                raise HarnessError(f"openai: --api-token-ids exact, but {self.api_base} refused return_token_ids "
                                   f"(HTTP {status}: {_short(doc)}); use --api-token-ids retokenize")
            body.pop("return_token_ids")  # a strict server rejecting the unknown field
            status, doc = await self._post_json(body)
        if status in (400, 422) and self.prompt_as_ids:
            self.prompt_as_ids = False  # a server that takes text prompts only
            body["prompt"] = self._prompt_text(0)
            status, doc = await self._post_json(body)
        if status != 200:
            raise HarnessError(f"openai: probe completion to {self.api_base}/completions failed: HTTP {status}: "
                               f"{_short(doc)}")
        choice = (doc.get("choices") or [{}])[0]
        got_ids = isinstance(choice.get("token_ids"), list)
        if self.token_ids_mode == "exact" and not got_ids:
            raise HarnessError(f"openai: --api-token-ids exact, but {self.api_base} returns no token_ids "
                               "(only vLLM's server supports return_token_ids); use --api-token-ids retokenize")
        self.exact_ids = got_ids and self.token_ids_mode != "retokenize"
        if not self.exact_ids:
            self._load_tokenizer(dataset)

    def _load_tokenizer(self, dataset: DatasetView) -> None:
        from ..tokenizers import load_tokenizer

        self._tokenizer = load_tokenizer(dataset.tokenizer_name)
        if self._tokenizer.kind == "byte":
            log.warning("openai: re-tokenizing outputs with the built-in byte tokenizer: token counts are bytes")

    def _prompt_text(self, index: int) -> str:
        assert self._dataset is not None
        prompt = getattr(self._dataset, "prompt", None)
        if callable(prompt):
            return prompt(index)
        if self._tokenizer is None:
            self._load_tokenizer(self._dataset)
        return self._tokenizer.decode(self._dataset.prompt_token_ids(index), skip_special_tokens=True)

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._client is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._client.aclose(), loop).result(10)
            except Exception:
                log.debug("openai: closing the HTTP client failed", exc_info=True)
        self._client = None
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not loop.is_running():
            loop.close()

    # ----------------------------------------------------------------------------------------------- requests
    def _body(self, prompt_ids: list[int], stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.api_model, "prompt": prompt_ids, "stream": stream, **self.sampling}
        if self.exact_ids:
            body["return_token_ids"] = True
        return body

    def _request_body(self, index: int, stream: bool) -> dict[str, Any]:
        assert self._dataset is not None
        body = self._body(list(self._dataset.prompt_token_ids(index)), stream)
        if not self.prompt_as_ids:
            body["prompt"] = self._prompt_text(index)
        return body

    async def _post_json(self, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            resp = await self._client.post("/completions", json=body)
        except self._httpx.HTTPError as exc:
            raise HarnessError(f"openai: POST {self.api_base}/completions failed: {type(exc).__name__}: {exc}") \
                from None
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text

    def _retokenize(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)

    def generate(self, indices: Sequence[int]) -> list[list[int]]:
        if self._loop is None:
            raise RuntimeError("OpenAIBackend.generate before start()")

        async def all_of() -> list[list[int]]:
            return list(await asyncio.gather(*(self._complete(i) for i in indices)))

        return self._call(all_of())

    async def _complete(self, index: int) -> list[int]:
        body = self._request_body(index, stream=False)

        async def attempt() -> list[int]:
            resp = await self._client.post("/completions", json=body)
            await _raise_for_status(resp, index)
            choice = resp.json()["choices"][0]
            return self._ids_of(choice, index)

        return await self._with_retries(index, attempt, lambda: False)

    def stream(self, index: int, on_first_token: TokenCallback, on_complete: TokenCallback) -> None:
        if self._loop is None:
            raise RuntimeError("OpenAIBackend.stream before start()")
        asyncio.run_coroutine_threadsafe(self._stream_one(index, on_first_token, on_complete), self._loop)

    async def _stream_one(self, index: int, on_first_token: TokenCallback, on_complete: TokenCallback) -> None:
        reported = False

        async def attempt() -> list[int]:
            nonlocal reported
            body = self._request_body(index, stream=True)
            ids: list[int] = []
            text_parts: list[str] = []
            async with self._client.stream("POST", "/completions", json=body) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    await _raise_for_status(resp, index)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise OpenAIRequestError(f"sample {index}: server error in stream: {_short(chunk)}")
                    choices = chunk.get("choices") or []
                    if not choices:
                        continue  # a usage-only chunk
                    choice = choices[0]
                    if self.exact_ids:
                        delta = choice.get("token_ids")
                        if delta is None:
                            raise OpenAIRequestError(f"sample {index}: a streamed chunk has no token_ids")
                        ids.extend(int(t) for t in delta)
                        has_output = bool(ids)
                    else:
                        text_parts.append(choice.get("text") or "")
                        has_output = any(text_parts)
                    if has_output and not reported:
                        reported = True
                        first = ids if self.exact_ids else self._retokenize("".join(text_parts))
                        on_first_token(list(first))
            return ids if self.exact_ids else self._retokenize("".join(text_parts))

        try:
            tokens = await self._with_retries(index, attempt, lambda: reported)
        except BaseException as exc:
            self.report_failure(exc if isinstance(exc, OpenAIRequestError) else
                                OpenAIRequestError(f"sample {index}: {type(exc).__name__}: {exc}"))
            return
        if not reported:
            on_first_token(list(tokens))
        on_complete(tokens)

    def _ids_of(self, choice: dict[str, Any], index: int) -> list[int]:
        if self.exact_ids:
            ids = choice.get("token_ids")
            if not isinstance(ids, list):
                raise OpenAIRequestError(f"sample {index}: the response has no token_ids")
            return [int(t) for t in ids]
        return self._retokenize(choice.get("text") or "")

    async def _with_retries(self, index: int, attempt, started) -> list[int]:
        """Run ``attempt`` under the concurrency limit; retry transient failures while nothing was reported."""
        httpx = self._httpx
        assert self._sem is not None
        last: BaseException | None = None
        for n in range(self.retries + 1):
            if n:
                await asyncio.sleep(min(0.5 * 2 ** (n - 1), 8.0))
            try:
                async with self._sem:
                    return await attempt()
            except (_Retryable, httpx.TransportError) as exc:  # TransportError covers timeouts and refused connections
                last = exc
                if started():
                    break
                log.warning("openai: sample %d attempt %d/%d failed: %s", index, n + 1, self.retries + 1,
                            _describe(exc))
            except OpenAIRequestError:
                raise
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise OpenAIRequestError(f"sample {index}: malformed response from {self.api_base}: "
                                         f"{type(exc).__name__}: {exc}") from None
        raise OpenAIRequestError(f"sample {index}: request to {self.api_base}/completions failed after "
                                 f"{n + 1} attempt(s): {_describe(last)}")

    # ------------------------------------------------------------------------------------------------ metadata
    def preferred_batch_size(self) -> int:
        return self.max_concurrency

    def provenance(self) -> dict[str, Any]:
        token_ids = None if self.exact_ids is None else ("exact" if self.exact_ids else "retokenized")
        return {
            "backend": self.name,
            "name": self.name,
            "kind": self.kind,
            "versions": dict(self._versions),
            "engine_args": {
                "api_base": self.api_base,
                "api_model": self.api_model,
                "max_concurrency": self.max_concurrency,
                "request_timeout_s": self.request_timeout_s,
                "retries": self.retries,
                "prompt": "token_ids" if self.prompt_as_ids else "text",
                "api_key_from_env": bool(os.environ.get(API_KEY_ENV)),
                "server_engine_args": dict(self.server_engine_args),
            },
            "sampling": dict(self.sampling),
            "sampling_overrides": dict(self.sampling_overrides),
            "token_ids": token_ids,
        }


def _normalize_base(url: str) -> str:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HarnessError(f"--api-base {url!r}: expected an http(s) URL such as http://127.0.0.1:8000/v1")
    url = url.rstrip("/")
    return url + "/v1" if parts.path in ("", "/") else url


async def _raise_for_status(resp, index: int) -> None:
    if resp.status_code == 200:
        return
    try:
        detail = _short(resp.json())
    except ValueError:
        detail = resp.text[:300]
    message = f"sample {index}: HTTP {resp.status_code} from {resp.request.url}: {detail}"
    if resp.status_code in RETRY_STATUS:
        raise _Retryable(message)
    raise OpenAIRequestError(message)


def _short(doc: Any) -> str:
    if isinstance(doc, dict):
        err = doc.get("error", doc)
        if isinstance(err, dict):
            doc = err.get("message", err)
        else:
            doc = err
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return text[:300]


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, _Retryable) else f"{type(exc).__name__}: {text}"
