// A document system's call to the national axis protocol, made the way the vendor SDK makes it:
// TLS from the JVM's default context (what SSLContexts.createSystemDefault() returns), which
// presents the client certificate named by the standard properties javax.net.ssl.keyStore,
// keyStorePassword and keyStoreType, and headers signed with HMAC-SHA256 over sign-header.
// Only JDK classes; run as a single source file (tests/test_vxp.py):
//   java -Djavax.net.ssl.keyStore=dms.p12 ... tests/VxpSdkClient.java ENDPOINT SYSTEMID SECRET
// It calls getAgenciesList and prints "HTTP <status>" and the answer's body.

import java.io.InputStream;
import java.io.OutputStream;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.text.SimpleDateFormat;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TimeZone;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.SSLContext;

public class VxpSdkClient {
    public static void main(String[] args) throws Exception {
        String endpoint = args[0], systemId = args[1], secret = args[2];
        Date now = new Date();
        SimpleDateFormat format = new SimpleDateFormat("ddMMyyyy'T'HHmmss");
        format.setTimeZone(TimeZone.getTimeZone("Asia/Ho_Chi_Minh"));
        String timestamp = format.format(now) + "+" + String.format("%04d", now.getTime() % 1000);

        Map<String, String> headers = new LinkedHashMap<>();
        headers.put("systemid", systemId);
        headers.put("servicetype", "eDoc");
        headers.put("messagetype", "edoc");
        headers.put("timestamp", timestamp);
        headers.put("Content-Type", "application/json");
        headers.put("version", "3.0.201608");
        String[] signed = {"systemid", "servicetype", "messagetype", "timestamp", "Content-Type"};
        StringBuilder json = new StringBuilder("{");
        for (String key : signed) {
            json.append(json.length() > 1 ? "," : "").append("\"XroadVnpt-").append(key).append("\":\"")
                .append(headers.get(key)).append("\"");
        }
        String signHeader = json.append("}").toString();
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(secret.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
        StringBuilder hash = new StringBuilder();
        for (byte b : mac.doFinal(signHeader.getBytes(StandardCharsets.UTF_8))) {
            hash.append(String.format("%02x", b));
        }

        HttpsURLConnection conn = (HttpsURLConnection) new URL(endpoint + "/getAgenciesList").openConnection();
        conn.setSSLSocketFactory(SSLContext.getDefault().getSocketFactory());
        conn.setRequestMethod("POST");
        conn.setDoOutput(true);
        for (Map.Entry<String, String> h : headers.entrySet()) {
            conn.setRequestProperty("XroadVnpt-" + h.getKey(), h.getValue());
        }
        conn.setRequestProperty("XroadVnpt-sign-header-key", String.join(";", signed));
        conn.setRequestProperty("XroadVnpt-sign-header", signHeader);
        conn.setRequestProperty("XroadVnpt-hash-header", hash.toString());
        conn.setRequestProperty("Content-Type", "application/json");
        try (OutputStream out = conn.getOutputStream()) {
            out.write("{}".getBytes(StandardCharsets.US_ASCII));
        }
        int status = conn.getResponseCode();
        try (InputStream in = status < 400 ? conn.getInputStream() : conn.getErrorStream()) {
            System.out.println("HTTP " + status);
            System.out.println(new String(in.readAllBytes(), StandardCharsets.US_ASCII));
        }
    }
}
