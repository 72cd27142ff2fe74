-- Envoy's second Lua filter, on WatchProcess's Server-Sent Events: an `id:`
-- line (the event's seq) before each event's data, which the transcoder does
-- not write, so that a browser's EventSource resumes with Last-Event-ID (the
-- server honours it like after_seq). The process, heartbeats and errors carry
-- no seq, so no id. Each chunk is rewritten as it passes (bodyChunks does not
-- buffer), and holds whole messages: the transcoder writes one per message,
-- and a JSON text has no raw newline, so "\ndata: " starts a message.
--
-- The renderer (server/edge/envoy.py) puts it into Envoy's config after a
-- preamble of `local` constants:
--   WATCH_PATH  WatchProcess's REST path (its google.api.http rule), as a
--               Lua pattern

-- This filter's own mark on a request whose response it rewrites.
local WATCH = "htk.sse_event_ids"

function envoy_on_request(request)
  local headers = request:headers()
  -- The first filter has taken the query off REST paths.
  if headers:get(":method") == "GET"
      and string.find(headers:get(":path"), WATCH_PATH)
      and not string.find(headers:get("content-type") or "", "^application/grpc") then
    request:streamInfo():dynamicMetadata():set(WATCH, "watch", true)
  end
end

function envoy_on_response(response)
  if response:streamInfo():dynamicMetadata():get(WATCH) == nil then
    return
  end
  for chunk in response:bodyChunks() do
    local text = "\n" .. chunk:getBytes(0, chunk:length())
    local with_ids = string.gsub(text, '\ndata: {"event":{"seq":(%d+)',
      '\nid: %1\ndata: {"event":{"seq":%1')
    chunk:setBytes(string.sub(with_ids, 2))
  end
end
