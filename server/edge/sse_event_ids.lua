-- Envoy's SSE filter, on WatchProcess's Server-Sent Events: an `id:` line
-- (the event's seq) before each event's data, which the transcoder does not
-- write, so that a browser's EventSource resumes with Last-Event-ID (the
-- server honours it like after_seq). The process, heartbeats and errors carry
-- no seq, so no id. Each chunk is rewritten as it passes (bodyChunks does not
-- buffer), and holds whole messages: the transcoder writes one per message,
-- and a JSON text has no raw newline, so "\ndata: " starts a message.
--
-- The renderer (server/edge/envoy.py) puts this code on the route of
-- WatchProcess transcoded from REST alone (server/edge/envoy.yaml), so every
-- response it sees is one to rewrite.

function envoy_on_response(response)
  for chunk in response:bodyChunks() do
    local text = "\n" .. chunk:getBytes(0, chunk:length())
    local with_ids = string.gsub(text, '\ndata: {"event":{"seq":(%d+)',
      '\nid: %1\ndata: {"event":{"seq":%1')
    chunk:setBytes(string.sub(with_ids, 2))
  end
end
