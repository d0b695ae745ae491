"""The engine client's wire behaviour that the benchmarks depend on."""

from __future__ import annotations

from gateway.httpclient import Pace, Pool, _Connection
from tests.standins.fixtures import StandinServer


class _RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def close(self) -> None:
        pass


def test_a_json_request_goes_out_in_one_send_with_its_head() -> None:
    conn = _Connection("127.0.0.1", 1, 1.0, Pace())
    sock = _RecordingSocket()
    conn.sock = sock  # type: ignore[assignment]
    conn.request("POST", "/v1/chat/completions", body=b'{"model":"m"}',
                 headers={"Content-Type": "application/json", "Content-Length": "13"})
    assert len(sock.sent) == 1, sock.sent
    head, _, body = sock.sent[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"Content-Length: 13" in head.split(b"\r\n")
    assert body == b'{"model":"m"}'


def test_requests_sent_in_one_piece_reach_the_engine_intact_one_after_another() -> None:
    with StandinServer.vllm(model="m") as server:
        pool = Pool(server.url, 2)
        try:
            for n in range(3):
                body = b'{"model":"m","messages":[{"role":"user","content":"hi %d"}]}' % n
                response = pool.post("/v1/chat/completions", body, read_timeout=5, connect_timeout=1)
                assert response.status_code == 200
                assert b"hi %d" % n in response.read()
        finally:
            pool.close()
        assert [body["messages"][0]["content"] for body in server.bodies("/v1/chat/completions")] == \
            ["hi 0", "hi 1", "hi 2"]
