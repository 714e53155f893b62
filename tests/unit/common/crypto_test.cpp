// Tests of common/crypto.h: known vectors for SHA-256, HMAC-SHA256 and the Standard Webhooks
// signature, base64 round trips, constant-time comparison and webhook ids (ULIDs).
#include "common/crypto.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <thread>

#include "common/time.h"

namespace iarelay {
namespace {

std::string hex(const std::string& raw) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

TEST(Crypto, Sha256KnownVector) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Crypto, HmacSha256KnownVector) {
  // RFC 4231, test case 2.
  std::string mac = hmac_sha256("Jefe", "what do ya want for nothing?");
  EXPECT_EQ(mac.size(), 32u);
  EXPECT_EQ(hex(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Crypto, StandardWebhooksSignatureVector) {
  // The Standard Webhooks reference example: secret whsec_<base64>, signed "id.timestamp.body".
  auto key = base64_decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  ASSERT_TRUE(key.is_ok());
  std::string sig = base64_encode(
      hmac_sha256(*key, "msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}"));
  EXPECT_EQ(sig, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

TEST(Crypto, Base64KnownVectors) {
  // RFC 4648 section 10.
  const std::pair<const char*, const char*> cases[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : cases) {
    EXPECT_EQ(base64_encode(plain), encoded);
    auto back = base64_decode(encoded);
    ASSERT_TRUE(back.is_ok()) << encoded;
    EXPECT_EQ(*back, plain);
  }
}

TEST(Crypto, Base64RoundTripsBinary) {
  for (size_t n = 0; n < 40; ++n) {
    std::string data;
    for (size_t i = 0; i < n; ++i) data += static_cast<char>((i * 37 + n) % 256);
    if (n > 2) data[n - 1] = '\0';  // trailing zero bytes are data, not padding
    auto back = base64_decode(base64_encode(data));
    ASSERT_TRUE(back.is_ok()) << n;
    EXPECT_EQ(*back, data) << n;
  }
}

TEST(Crypto, Base64RejectsMalformedInput) {
  EXPECT_FALSE(base64_decode("abc").is_ok());
  EXPECT_FALSE(base64_decode("ab!?").is_ok());
}

TEST(Crypto, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("v1,abc", "v1,abc"));
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_FALSE(constant_time_equal("v1,abc", "v1,abd"));
  EXPECT_FALSE(constant_time_equal("v1,abc", "v1,ab"));
  EXPECT_FALSE(constant_time_equal("", "x"));
}

TEST(Crypto, WebhookIdsAreUlids) {
  const std::string alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    std::string id = new_webhook_id();
    ASSERT_EQ(id.size(), 26u) << id;
    ASSERT_EQ(id.find_first_not_of(alphabet), std::string::npos) << id;
    ASSERT_LE(id[0], '7') << id;  // 128 bits: the first character holds 3
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 10000u);
}

TEST(Crypto, WebhookIdsCarryTheirTimeAndSortByIt) {
  const std::string alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  Millis before = now_millis();
  std::string id = new_webhook_id();
  Millis after = now_millis();
  Millis t = 0;
  for (int i = 0; i < 10; ++i) t = t * 32 + static_cast<Millis>(alphabet.find(id[i]));
  EXPECT_GE(t, before);
  EXPECT_LE(t, after);

  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(new_webhook_id());
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
}

}  // namespace
}  // namespace iarelay
