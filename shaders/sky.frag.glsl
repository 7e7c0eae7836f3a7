#version 150
// Evening sky: deep blue overhead fading to the haze of the horizon (the fog's colour), with
// the low sun's glow; below the horizon the haze thins into the land's colour (the land
// itself is the window's clear colour: no ground polygon costs a fill of the screen).
uniform vec3 u_sun;
uniform vec3 u_fog_color;
uniform vec3 u_ground;
in vec3 v_dir;
out vec4 o_color;

void main() {
    vec3 d = normalize(v_dir);
    vec3 zenith = vec3(0.16, 0.27, 0.5);
    vec3 rgb = mix(u_fog_color, zenith, pow(clamp(d.z, 0.0, 1.0), 0.45));
    rgb = mix(rgb, u_ground, smoothstep(0.0, 0.4, -d.z));
    float sun = max(dot(d, normalize(u_sun)), 0.0);
    rgb += vec3(1.0, 0.7, 0.4) * (0.35 * pow(sun, 8.0) + 1.5 * pow(sun, 400.0)) * step(0.0, d.z);
    o_color = vec4(rgb, 1.0);
}
