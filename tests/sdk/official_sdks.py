#!/usr/bin/env python3
"""Posts conversions to a running `tally serve` with the official Meta and TikTok SDKs.

Usage: official_sdks.py HOST:PORT API_KEY META_PIXEL_ID TIKTOK_PIXEL_CODE
Prints one JSON line with what each SDK call returned; exits non-zero if any call fails
(the TikTok SDK raises on any `code != 0`; Meta's needs `events_received`).
"""
import json, sys, time
from datetime import datetime, timezone

addr, key, meta_pixel, tt_pixel = sys.argv[1:5]
base = "http://" + addr
now = int(time.time()) - 60
out = {}

# Meta: FacebookSession.GRAPH points the SDK at Tally (FACTS.md); it posts form-encoded with
# access_token in the query and `data` as a JSON array of JSON strings, and hashes em/ph itself.
from facebook_business.session import FacebookSession
FacebookSession.GRAPH = base
from facebook_business.api import FacebookAdsApi
from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.event_request import EventRequest
from facebook_business.adobjects.serverside.user_data import UserData

FacebookAdsApi.init(access_token=key, crash_log=False)
ud = UserData(emails=["Jane.Doe@Example.com"], phones=["+1 (650) 555-1212"], first_name="Jane",
              external_ids=["cust-42"], state="CA", fbc="fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
              client_ip_address="203.0.113.7",
              client_user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")
events = [Event(event_name="Purchase", event_time=now, event_id="sdk-meta-%d" % i, user_data=ud,
                custom_data=CustomData(value=123.45, currency="usd", order_id="order-%d" % i),
                action_source=ActionSource.WEBSITE, event_source_url="https://shop.example/checkout") for i in range(3)]
resp = EventRequest(events=events, pixel_id=meta_pixel).execute()
out["meta_events_received"] = resp.events_received
out["meta_fbtrace_id"] = resp.fbtrace_id

# TikTok: Configuration().host points the SDK at Tally; it calls the legacy pixel endpoints.
import business_api_client
from business_api_client.api.event_callback_api import EventCallbackApi
from business_api_client.models.pixel_batch_body import PixelBatchBody
from business_api_client.models.pixel_context import PixelContext
from business_api_client.models.pixel_context_ad import PixelContextAd
from business_api_client.models.pixel_context_page import PixelContextPage
from business_api_client.models.pixel_context_user import PixelContextUser
from business_api_client.models.pixel_properties import PixelProperties
from business_api_client.models.pixel_track_body import PixelTrackBody
from business_api_client.models.pixelbatch_batch import PixelbatchBatch

conf = business_api_client.Configuration()
conf.host = base
api = EventCallbackApi(business_api_client.ApiClient(conf))
stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
def ctx(email, phone, ext, cb):
    return PixelContext(ad=PixelContextAd(callback=cb), ip="203.0.113.9",
        page=PixelContextPage(url="https://shop.example/p", referrer="https://www.tiktok.com/"),
        user=PixelContextUser(email=email, phone_number=phone, external_id=ext, ttp="ttp-abc"),
        user_agent="Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36")
props = PixelProperties(currency="USD", value=21.0)
r1 = api.pixel_track(key, body=PixelTrackBody(pixel_code=tt_pixel, event="CompletePayment", event_id="sdk-tt-1",
    timestamp=stamp, context=ctx("jane.doe@example.com", "+16505551212", "cust-42", "E.C.P.cb123"), properties=props))
r2 = api.pixel_batch(key, body=PixelBatchBody(pixel_code=tt_pixel, batch=[
    PixelbatchBatch(type="track", event="CompletePayment", event_id="sdk-tt-2", timestamp=stamp,
        context=ctx("jane.doe@example.com", "+16505551212", "cust-43", "E.C.P.cb124"), properties=props),
    PixelbatchBatch(type="track", event="AddToCart", event_id="sdk-tt-3", timestamp=stamp,
        context=ctx(None, None, None, None), properties=PixelProperties(value=5, currency="USD")),
]))
# The SDK raises TiktokSDKError on any `code != 0`; reaching here means both were accepted.
# (what the calls return is the response's `data` object).
out["tiktok_track"] = "accepted"
out["tiktok_batch"] = "accepted"
print(json.dumps(out))
